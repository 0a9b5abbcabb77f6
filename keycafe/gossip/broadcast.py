"""The dissemination queue (memberlist's queue.go, TransmitLimitedQueue).

Each update about a member is piggybacked on outgoing packets until it has been
sent ``retransmit_mult * ceil(log10(N + 1))`` times, least-sent first; newer
news about a member replaces whatever was queued about it. The application's
broadcasts share the queue under keys of their own kind, so no member id can
replace them (``Key``: ``("member", id)`` or ``("user", key)``).
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import attrs

Key: TypeAlias = tuple[Literal["member", "user"], str]


def retransmit_limit(mult: int, n: int) -> int:
    return mult * math.ceil(math.log10(n + 1))


@attrs.define
class _Item:
    key: Key
    payload: bytes  # one encoded message
    transmits: int
    order: int  # FIFO among equals, newest first


@attrs.define
class BroadcastQueue:
    retransmit_mult: int
    _items: dict[Key, _Item] = attrs.field(factory=dict)
    _counter: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: Key, payload: bytes) -> None:
        """Queue news under ``key``, replacing older news under it."""
        self._counter += 1
        self._items[key] = _Item(key, payload, 0, self._counter)

    def take(self, budget: int, members: int) -> list[bytes]:
        """Messages fitting in ``budget`` bytes, least-sent first; counts a send."""
        if not self._items or budget <= 0:
            return []
        limit = retransmit_limit(self.retransmit_mult, members)
        chosen: list[bytes] = []
        for item in sorted(self._items.values(), key=lambda i: (i.transmits, -i.order)):
            size = len(item.payload)
            if size > budget:
                continue
            budget -= size
            chosen.append(item.payload)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
            if budget < 16:
                break
        return chosen
