"""What the layer above plugs into the gossip core (memberlist's Delegate).

Membership carries the application's data without knowing what it is: opaque
broadcasts piggybacked on datagrams (``Gossip.queue_broadcast`` out,
``notify_msg`` in) and an opaque state exchanged both ways by every push-pull
(``local_state`` out, ``merge_remote_state`` in). Node metadata, the third
channel, is ``Gossip.update_meta``.

The core calls these while it handles a packet; a delegate may call back into
the core (queue a broadcast, push its state) from inside them.
"""

from __future__ import annotations

from typing import Protocol


class Delegate(Protocol):
    def notify_msg(self, payload: bytes, now: float) -> None:
        """A broadcast some member queued reached us (possibly again)."""

    def local_state(self) -> bytes:
        """Our state, for a push-pull (``b""``: none)."""

    def merge_remote_state(self, payload: bytes, now: float) -> None:
        """A peer's ``local_state``, from a push-pull either way (never empty)."""


class NoDelegate:
    """The default: carries nothing, ignores everything."""

    def notify_msg(self, payload: bytes, now: float) -> None:
        pass

    def local_state(self) -> bytes:
        return b""

    def merge_remote_state(self, payload: bytes, now: float) -> None:
        pass
