"""The command layer: sessions, the command table and every command (sans-I/O).

Importing this package registers all commands.
"""

from __future__ import annotations

from keycafe.server import cluster, connection, introspection, keyspace, strings
from keycafe.server.registry import COMMANDS, CommandError, CommandSpec
from keycafe.server.session import Session
from keycafe.server.state import Counters, ServerConfig, ServerState

__all__ = [
    "COMMANDS",
    "CommandError",
    "CommandSpec",
    "Counters",
    "ServerConfig",
    "ServerState",
    "Session",
    "cluster",
    "connection",
    "introspection",
    "keyspace",
    "strings",
]
