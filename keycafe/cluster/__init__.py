"""Cluster topology: the slot table (and, later, the ring and the coordinator)."""

from __future__ import annotations

from keycafe.cluster.slot_table import NodeAddr, SlotRange, SlotTable

__all__ = ["NodeAddr", "SlotRange", "SlotTable"]
