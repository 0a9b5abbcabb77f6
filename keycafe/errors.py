"""The one exception root and the errors every layer shares."""

from __future__ import annotations


class KeycafeError(Exception):
    """Root of every exception keycafe raises."""


class ProtocolError(KeycafeError):
    """A peer sent bytes that break the protocol (remote misbehaviour).

    ``str(exc)`` is the text of the RESP error reply, e.g.
    ``"Protocol error: invalid bulk length"``.
    """


class BadPacket(KeycafeError):
    """An untrusted datagram or frame could not be decoded; drop and count it."""


class ConfigError(KeycafeError):
    """Local misuse: an invalid setting or flag."""


class StartupError(KeycafeError):
    """A node could not start (e.g. its port is taken); the message says why."""


# -- the client (keycafe.client) --------------------------------------------------


# keycafe.ConnectionError and keycafe.TimeoutError shadow the builtins on purpose
# (the names users expect); inside keycafe they are always imported explicitly.
class ConnectionError(KeycafeError):
    """No node could be reached (or one broke off) within the retry deadline."""


class TimeoutError(ConnectionError):
    """A node did not answer within the socket timeout."""


class ResponseError(KeycafeError):
    """The server answered with an error reply; ``str(exc)`` is its text."""


class ClusterDownError(ResponseError):
    """The cluster kept answering CLUSTERDOWN (no owner reachable) until the deadline."""


class TryAgainError(ResponseError):
    """The cluster kept answering TRYAGAIN (a slot moving) until the deadline."""


class RedirectError(ResponseError):
    """MOVED or ASK: the slot lives elsewhere (the client follows these itself)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        kind, slot, endpoint = message.split(" ", 2)
        host, _, port = endpoint.rpartition(":")
        self.ask = kind == "ASK"
        self.slot = int(slot)
        self.address = (host.removeprefix("[").removesuffix("]"), int(port))
