"""The trio shell: sockets, tasks and timers around the sans-I/O cores."""

from __future__ import annotations

from keycafe.node.node import NodeConfig, serve_node
from keycafe.node.server import serve_clients

__all__ = ["NodeConfig", "serve_clients", "serve_node"]
