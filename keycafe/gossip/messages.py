"""Gossip messages (values only; their wire format lives in codec.py)."""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

import attrs

Address: TypeAlias = tuple[str, int]

# The largest incarnation (and metadata version) a node issues or accepts. A
# process starts at the wall-clock second (about 2^31) and adds one per
# refutation or metadata change, so no honest member comes near 2^62; anything
# above it on the wire is a bad packet. The gap up to the codec's 2^63 - 1
# means a refutation (one above what it refutes) is always encodable. At the
# bound itself: accusations at MAX_INCARNATION are ignored (nobody could refute
# them), and a member there can no longer refute or change its metadata; only
# forged news can put it there (docs/protocol.md, "Gossip wire format").
MAX_INCARNATION: Final = 2**62


class State(enum.IntEnum):
    """A member's state as SWIM sees it. The numbers are on the wire."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3  # dead by its own graceful leave


@attrs.frozen(kw_only=True)
class MemberInfo:
    """What every node knows about a member (push-pull carries a list of these)."""

    node: str
    addr: Address  # gossip address (UDP and TCP)
    client_addr: Address  # where Redis clients reach it
    incarnation: int
    state: State
    meta_version: int = 0
    meta: dict[str, str] = attrs.field(factory=dict, eq=False, hash=False)


@attrs.frozen(kw_only=True)
class Ping:
    seq: int
    target: str  # so a node answering at a reused address can tell it is not meant
    source: str


@attrs.frozen(kw_only=True)
class IndirectPing:
    """ping-req: ``source`` asks the receiver to probe ``target`` on its behalf."""

    seq: int
    target: str
    target_addr: Address
    source: str
    nack: bool  # Lifeguard: answer with a Nack if the target does not ack


@attrs.frozen(kw_only=True)
class Ack:
    seq: int
    source: str


@attrs.frozen(kw_only=True)
class Nack:
    seq: int
    source: str


@attrs.frozen(kw_only=True)
class Suspect:
    incarnation: int
    node: str
    source: str


@attrs.frozen(kw_only=True)
class Alive:
    member: MemberInfo  # state is ALIVE


@attrs.frozen(kw_only=True)
class Dead:
    incarnation: int
    node: str
    source: str  # == node for a graceful leave


@attrs.frozen(kw_only=True)
class PushPull:
    """Full state, sent both ways over TCP (a join is the first one)."""

    join: bool
    members: tuple[MemberInfo, ...]
    user_state: bytes = b""  # the delegate's local_state, opaque here


@attrs.frozen(kw_only=True)
class UserMsg:
    """An application broadcast (``Gossip.queue_broadcast``): opaque bytes
    handed to the receiver's delegate."""

    payload: bytes


Message: TypeAlias = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | PushPull | UserMsg
