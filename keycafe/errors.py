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
