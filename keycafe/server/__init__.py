"""The command layer: sessions, the command table and every command (sans-I/O).

Importing this package registers all commands.
"""

from __future__ import annotations

from keycafe.server import cluster_commands, connection, introspection, keyspace, strings
from keycafe.server.errors import CommandError
from keycafe.server.probe import LoneProbe, MemberView, NodeProbe
from keycafe.server.registry import COMMANDS, CommandSpec
from keycafe.server.routing import Routing
from keycafe.server.session import Session
from keycafe.server.state import Counters, ServerConfig, ServerState

__all__ = [
    "COMMANDS",
    "CommandError",
    "CommandSpec",
    "Counters",
    "LoneProbe",
    "MemberView",
    "NodeProbe",
    "Routing",
    "ServerConfig",
    "ServerState",
    "Session",
    "cluster_commands",
    "connection",
    "introspection",
    "keyspace",
    "strings",
]
