"""Gossip messages (values only; their wire format lives in codec.py)."""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

Address: TypeAlias = tuple[str, int]


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


@attrs.frozen(kw_only=True)
class Ring:
    """The ring's member set as the coordinator published it.

    Members keep the ring with the greatest (term, epoch): a higher term wins
    whatever its epoch, which fences a stale coordinator's decisions.

    ``pending``, when not empty, is the member set the coordinator means to
    move to next: every member moves the slots it hands over in that change,
    says so in its metadata, and only then does the change take effect (as the
    next epoch, with ``members = pending``)."""

    epoch: int
    term: int
    coordinator: str
    members: tuple[str, ...]
    pending: tuple[str, ...] = ()

    @property
    def version(self) -> tuple[int, int]:
        return (self.term, self.epoch)


Message: TypeAlias = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | PushPull | Ring
