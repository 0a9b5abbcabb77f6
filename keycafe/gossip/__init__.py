"""SWIM + Lifeguard membership: a sans-I/O core (``core.Gossip``) that carries
the layer above's data through a ``delegate.Delegate``."""

from __future__ import annotations

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import EventKind, Gossip, MemberEvent, StreamJob
from keycafe.gossip.delegate import Delegate, NoDelegate
from keycafe.gossip.messages import MAX_INCARNATION, Address, MemberInfo, State

__all__ = [
    "MAX_INCARNATION",
    "Address",
    "Delegate",
    "EventKind",
    "Gossip",
    "GossipConfig",
    "MemberEvent",
    "MemberInfo",
    "NoDelegate",
    "State",
    "StreamJob",
]
