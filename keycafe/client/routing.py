"""Where a request goes and what to do with its answer (sans-I/O).

Both client shells (plain sockets and trio) drive the same objects: a
``SlotMap`` built from ``CLUSTER SLOTS`` and mended by ``MOVED``, and an
``Attempt`` per request that turns each reply or connection failure into "done",
"retry after this long (maybe refreshing the map first)" or a typed error. The
shells only move bytes and sleep.

The retry rules follow Redis Cluster's client guidance: ``MOVED`` updates the
slot's owner and retries at once (a full refresh after a few, as redis-py does,
since one move usually means many); ``ASK`` retries once at the named node
preceded by ``ASKING``; ``TRYAGAIN``, ``CLUSTERDOWN`` and connection failures
back off with jitter (full jitter, doubling from ``backoff_base`` up to
``backoff_cap``) and refresh, until the request's deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from keycafe.errors import (
    ClusterDownError,
    ConfigError,
    ConnectionError,
    RedirectError,
    ResponseError,
    TryAgainError,
)
from keycafe.store.keyslot import SLOT_COUNT, key_slot

Address = tuple[str, int]

# MOVED replies after which the whole map is fetched again rather than mended.
REFRESH_AFTER_MOVES: Final = 8
ANY_NODE: Final = -1  # the "slot" of a request any node may answer
TRYAGAIN: Final = "TRYAGAIN"  # a slot is moving: wait and retry
CLUSTERDOWN: Final = "CLUSTERDOWN"  # no reachable owner: wait, refresh, retry


def parse_seeds(seeds: str | Sequence[str]) -> list[Address]:
    """``"host:port"`` or a list of them (``[v6]:port`` allowed)."""
    items = [seeds] if isinstance(seeds, str) else list(seeds)
    if not items:
        raise ConfigError("no seeds given: pass 'host:port' or a list of them")
    out = []
    for item in items:
        host, sep, port = str(item).strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"bad seed {item!r}: expected 'host:port'")
        out.append((host, int(port)))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


@attrs.define(eq=False)
class SlotMap:
    """The primary of every slot, as the cluster last told us."""

    owner: list[Address | None] = attrs.field(factory=lambda: [None] * SLOT_COUNT)
    moves: int = 0
    _primaries: list[Address] | None = None  # cached: asked for on every retry

    @classmethod
    def from_cluster_slots(cls, reply: Any, asked: Address) -> SlotMap:
        """Build from a ``CLUSTER SLOTS`` reply; an empty host means ``asked``'s."""
        if not isinstance(reply, list):
            raise ResponseError(f"unexpected CLUSTER SLOTS reply: {reply!r}")
        owner: list[Address | None] = [None] * SLOT_COUNT
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = _text(primary[0]) or asked[0]
            addr = (host, int(primary[1]))
            owner[start : end + 1] = [addr] * (end - start + 1)
        return cls(owner=owner)

    def primaries(self) -> list[Address]:
        if self._primaries is None:
            self._primaries = sorted({a for a in self.owner if a is not None})
        return self._primaries

    def node_for(self, slot: int) -> Address | None:
        return self.owner[slot]

    def moved(self, slot: int, addr: Address) -> bool:
        """Record a MOVED; True if it is time to refresh the whole map."""
        self.owner[slot] = addr
        self._primaries = None
        self.moves += 1
        return self.moves % REFRESH_AFTER_MOVES == 0


def slot_of(key: bytes | str) -> int:
    return key_slot(key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape"))


@attrs.frozen
class Done:
    value: Any


@attrs.frozen
class Retry:
    delay: float  # seconds to wait first
    refresh: bool  # fetch the slot map again before retrying


@attrs.frozen(kw_only=True)
class RetryPolicy:
    deadline: float = 10.0  # seconds a request may spend retrying in all
    backoff_base: float = 0.02
    backoff_cap: float = 0.5


@attrs.define(eq=False)
class Attempt:
    """One request's way through redirects and retries."""

    slot: int
    policy: RetryPolicy
    started: float  # when the request began (the shell's monotonic clock)
    rng: random.Random
    asking: Address | None = None  # set by ASK: the next try goes there, once
    tries: int = 0
    redirects: int = 0

    def target(self, slots: SlotMap, fallback: Callable[[], Address]) -> tuple[Address, bool]:
        """Where to send the next try, and whether ASKING must precede it."""
        if self.asking is not None:
            return self.asking, True
        if self.slot == ANY_NODE:
            return fallback(), False
        return slots.owner[self.slot] or fallback(), False

    def on_reply(self, reply: Any, slots: SlotMap, now: float) -> Done | Retry:
        asked, self.asking = self.asking, None
        if not isinstance(reply, ResponseError):
            return Done(reply)
        if isinstance(reply, RedirectError):
            self._check_deadline(now, reply)
            self.redirects += 1
            # Redirects are followed at once; a long chain of them (nodes that
            # disagree for a moment) backs off like any other wait.
            delay = 0.0 if self.redirects <= 5 else self._delay(now)
            if reply.ask:
                self.asking = reply.address
                return Retry(delay, refresh=False)
            refresh = slots.moved(reply.slot, reply.address) if asked is None else False
            return Retry(delay, refresh=refresh)
        text = str(reply)
        if text.startswith(TRYAGAIN):
            return self._back_off(TryAgainError(text), now, refresh=False)
        if text.startswith(CLUSTERDOWN):
            return self._back_off(ClusterDownError(text), now, refresh=True)
        return Done(reply)  # an ordinary error reply: the caller raises it

    def on_connection_error(self, exc: BaseException, now: float) -> Retry:
        self.asking = None
        message = str(exc) or type(exc).__name__
        return self._back_off(ConnectionError(message), now, refresh=True)

    def _back_off(self, error: BaseException, now: float, *, refresh: bool) -> Retry:
        self._check_deadline(now, error)
        return Retry(self._delay(now), refresh=refresh)

    def _delay(self, now: float) -> float:
        """Full jitter, the ceiling doubling per wait; never past the deadline
        (one last try just before it)."""
        self.tries += 1
        p = self.policy
        ceiling = min(p.backoff_cap, p.backoff_base * 2 ** min(self.tries, 16))
        return min(self.rng.uniform(0, ceiling), max(0.0, self.started + p.deadline - now))

    def _check_deadline(self, now: float, error: BaseException) -> None:
        if now - self.started >= self.policy.deadline:
            if isinstance(error, RedirectError):
                raise ResponseError(f"too many redirects until the deadline; last: {error}")
            raise error


def retryable(reply: ResponseError) -> bool:
    """An error reply that ``Attempt`` retries rather than returns."""
    return isinstance(reply, RedirectError) or str(reply).startswith((TRYAGAIN, CLUSTERDOWN))
