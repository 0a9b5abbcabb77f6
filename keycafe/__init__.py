"""keycafe: a peer-to-peer distributed in-memory key-value store speaking RESP."""

from __future__ import annotations

from keycafe.errors import BadPacket, ConfigError, KeycafeError, ProtocolError, StartupError

__version__ = "0.1.0"

__all__ = [
    "BadPacket",
    "ConfigError",
    "KeycafeError",
    "ProtocolError",
    "StartupError",
    "__version__",
]
