"""Cluster topology: the slot table, the ring record and how it spreads, the coordinator."""

from __future__ import annotations

from keycafe.cluster.ring_record import Ring
from keycafe.cluster.slot_table import NodeAddr, SlotRange, SlotTable

__all__ = ["NodeAddr", "Ring", "SlotRange", "SlotTable"]
