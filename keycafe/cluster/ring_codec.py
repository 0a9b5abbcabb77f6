"""The ring's wire format: the payload of its gossip broadcast and push-pull state.

The gossip layer carries these bytes without looking inside (a ``USER``
broadcast, a push-pull's user state). A payload is a msgpack array whose first
element is its kind. Kind numbers are the protocol: ONLY APPEND to this list.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from keycafe.cluster.ring_record import MAX_EPOCH, MAX_TERM, Ring
from keycafe.errors import BadPacket

RING: Final = 1
MAX_BOOT: Final = 64  # characters of a boot id (keycafe's are 16)

# Bounds for untrusted input: an id is at most 4096 characters and a ring at
# most 65536 members, so a payload can never make us allocate much beyond it.
_LIMITS: Final = {
    "max_str_len": 4096,
    "max_bin_len": 0,
    "max_array_len": 65536,
    "max_map_len": 0,
    "max_ext_len": 0,
}


def encode_ring(ring: Ring) -> bytes:
    fields: list[Any] = [RING, ring.epoch, ring.term, ring.coordinator, list(ring.members)]
    if ring.pending or ring.down:
        fields.append(list(ring.pending))
    if ring.down:
        fields.append(list(ring.down))
        if ring.down_epochs or ring.down_boots:
            fields.append(list(ring.down_epochs))
        if ring.down_boots:
            fields.append(list(ring.down_boots))
    return msgpack.packb(fields)  # type: ignore[no-any-return]


def _int(v: Any, hi: int) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise BadPacket("expected an integer in range")
    return v


def _ids(v: Any) -> tuple[str, ...]:
    if type(v) is not list or not all(type(x) is str and x for x in v):
        raise BadPacket("expected a list of node ids")
    return tuple(v)


def decode_ring_untrusted(data: bytes) -> Ring:
    """A ring from a peer's bytes; raises only ``BadPacket``."""
    try:
        f = msgpack.unpackb(data, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises several types for garbage
        raise BadPacket(f"undecodable ring: {type(exc).__name__}") from exc
    # A sixth field (pending members) is left out when there are none, and a
    # seventh (members declared down) too, and an eighth (the epoch each was
    # declared down in).
    if (
        type(f) is not list
        or len(f) not in (5, 6, 7, 8, 9)
        or type(f[0]) is not int
        or f[0] != RING
    ):
        raise BadPacket("not a ring")
    coordinator = f[3]
    if type(coordinator) is not str or not coordinator:
        raise BadPacket("bad ring coordinator")
    members = _ids(f[4])
    if not members:
        raise BadPacket("an empty ring")
    down = _ids(f[6]) if len(f) >= 7 else ()
    if not set(down) <= set(members):
        raise BadPacket("a member down that is not a member")
    since: tuple[int, ...] = ()
    if len(f) >= 8:
        if type(f[7]) is not list or len(f[7]) not in (0, len(down)):
            raise BadPacket("one epoch per member down")
        # A member went down in this ring's epoch or before: no later.
        since = tuple(_int(x, _int(f[1], MAX_EPOCH)) for x in f[7])
    boots: tuple[str, ...] = ()
    if len(f) == 9:
        if (
            type(f[8]) is not list
            or len(f[8]) != len(down)
            or not all(type(x) is str and len(x) <= MAX_BOOT for x in f[8])
        ):
            raise BadPacket("one boot id per member down")
        boots = tuple(f[8])
    return Ring(
        epoch=_int(f[1], MAX_EPOCH),
        term=_int(f[2], MAX_TERM),
        coordinator=coordinator,
        members=members,
        pending=_ids(f[5]) if len(f) >= 6 else (),
        down=down,
        down_epochs=since,
        down_boots=boots,
    )
