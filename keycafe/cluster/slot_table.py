"""The epoch-stamped slot table: who owns each of the 16384 slots.

Routing asks it one question per keyed request ("is this slot mine, and if not,
what do I tell the client?"); ``CLUSTER SLOTS/SHARDS/NODES`` are generated from
it, so they always agree with each other and with the redirects. It is a value:
a topology change builds a new table with a higher epoch.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Final

import attrs

from keycafe.store.keyslot import SLOT_COUNT

CLUSTERDOWN: Final = b"-CLUSTERDOWN Hash slot not served\r\n"
CROSSSLOT: Final = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"


@attrs.frozen(kw_only=True)
class NodeAddr:
    """How clients and peers reach a node."""

    node_id: str  # 40 hex characters, stable for the node's lifetime
    host: str  # the address clients should use (--advertise, else --bind)
    port: int  # client (RESP) port
    cluster_port: int  # gossip/stream port
    hostname: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@attrs.frozen(kw_only=True)
class SlotRange:
    start: int
    end: int  # inclusive
    owners: tuple[str, ...]  # node ids; owners[0] is the primary


@attrs.frozen(kw_only=True)
class SlotTable:
    """Owners per slot for one epoch, as seen by node ``my_id``."""

    epoch: int
    my_id: str
    nodes: Mapping[str, NodeAddr]
    owners: tuple[tuple[str, ...], ...]  # indexed by slot; () = unowned
    # Owners known to be dead: their slots get CLUSTERDOWN, not a redirect to
    # a node that cannot answer, until the ring without them is in force.
    down: frozenset[str] = frozenset()
    # Derived: 1 where this node is the slot's primary (one index per request).
    mine: bytes = attrs.field(init=False)
    _redirects: dict[int, bytes] = attrs.field(init=False, factory=dict, eq=False)
    _ranges: list[SlotRange] | None = attrs.field(init=False, default=None, eq=False)
    _led: dict[str, int] | None = attrs.field(init=False, default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.owners) != SLOT_COUNT:
            raise ValueError(f"a slot table needs {SLOT_COUNT} entries, got {len(self.owners)}")
        object.__setattr__(self, "mine", primary_mask(self.owners, self.my_id))

    @classmethod
    def single(cls, me: NodeAddr, epoch: int = 1) -> SlotTable:
        """A cluster of one: ``me`` owns every slot."""
        return cls(
            epoch=epoch,
            my_id=me.node_id,
            nodes={me.node_id: me},
            owners=((me.node_id,),) * SLOT_COUNT,
        )

    @classmethod
    def unassigned(cls, me: NodeAddr) -> SlotTable:
        """No ring yet (a node joining through a seed): every slot CLUSTERDOWN."""
        return cls(epoch=0, my_id=me.node_id, nodes={me.node_id: me}, owners=((),) * SLOT_COUNT)

    @property
    def me(self) -> NodeAddr:
        return self.nodes[self.my_id]

    def redirect(self, slot: int) -> bytes:
        """The reply for a request on a slot this node is not primary for."""
        reply = self._redirects.get(slot)
        if reply is None:
            owners = self.owners[slot]
            if not owners or owners[0] in self.down:
                reply = CLUSTERDOWN
            else:
                addr = self.nodes[owners[0]]
                reply = b"-MOVED %d %b\r\n" % (slot, addr.endpoint.encode())
            self._redirects[slot] = reply
        return reply

    def ranges(self) -> list[SlotRange]:
        """Maximal runs of consecutive slots with the same owners, owned ones only
        (computed once per table: CLUSTER SLOTS asks for them often)."""
        if self._ranges is None:
            object.__setattr__(self, "_ranges", self._find_ranges())
        assert self._ranges is not None
        return list(self._ranges)

    def _find_ranges(self) -> list[SlotRange]:
        out: list[SlotRange] = []
        start = 0
        owners = self.owners
        for slot in range(1, SLOT_COUNT + 1):
            if slot == SLOT_COUNT or owners[slot] != owners[start]:
                if owners[start]:
                    out.append(SlotRange(start=start, end=slot - 1, owners=owners[start]))
                start = slot
        return out

    def with_down(self, down: frozenset[str]) -> SlotTable:
        """The same table with ``down`` the members known dead (``mine`` does
        not depend on them, so it is not computed again)."""
        table = copy.copy(self)
        object.__setattr__(table, "down", down)
        object.__setattr__(table, "_redirects", {})
        return table

    def primary_counts(self) -> dict[str, int]:
        """How many slots each member is primary of (computed once per table)."""
        if self._led is None:
            led: dict[str, int] = {}
            for owners, n in Counter(self.owners).items():  # few distinct tuples
                if owners:
                    led[owners[0]] = led.get(owners[0], 0) + n
            object.__setattr__(self, "_led", led)
        assert self._led is not None
        return dict(self._led)

    def slots_assigned(self) -> int:
        return SLOT_COUNT - self.owners.count(())


def primary_mask(owners: tuple[tuple[str, ...], ...], node: str) -> bytes:
    """1 for each slot whose primary is ``node``, else 0. A table holds few
    distinct owner tuples (one per member at one copy), so each is tested
    once and the slots are mapped in C."""
    first = {o: o[:1] == (node,) for o in set(owners)}
    return bytes(map(first.__getitem__, owners))


def owner_mask(owners: tuple[tuple[str, ...], ...], node: str) -> bytes:
    """1 for each slot ``node`` holds a copy of (primary or replica), else 0."""
    held = {o: node in o for o in set(owners)}
    return bytes(map(held.__getitem__, owners))
