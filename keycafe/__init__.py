"""keycafe: a peer-to-peer distributed in-memory key-value store speaking RESP."""

from __future__ import annotations

from keycafe.errors import (
    BadPacket,
    ClusterDownError,
    ConfigError,
    ConnectionError,
    KeycafeError,
    ProtocolError,
    ResponseError,
    StartupError,
    TimeoutError,
    TryAgainError,
)

__version__ = "0.1.0"

__all__ = [
    "BadPacket",
    "Cluster",
    "ClusterDownError",
    "ConfigError",
    "ConnectionError",
    "KeycafeError",
    "ProtocolError",
    "ResponseError",
    "StartupError",
    "TimeoutError",
    "TryAgainError",
    "__version__",
    "open_cluster",
]


def __getattr__(name: str) -> object:
    # The client is imported on first use, so running a node never loads it.
    if name in ("Cluster", "open_cluster"):
        from keycafe import client

        return getattr(client, name)
    raise AttributeError(f"module 'keycafe' has no attribute {name!r}")
