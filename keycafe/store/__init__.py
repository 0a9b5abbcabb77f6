"""The store: keys, slots, entries, expiry and the hybrid logical clock."""

from __future__ import annotations

from keycafe.store.engine import Store, StoreConfig
from keycafe.store.hlc import HybridClock
from keycafe.store.keyslot import SLOT_COUNT, key_slot

__all__ = ["SLOT_COUNT", "HybridClock", "Store", "StoreConfig", "key_slot"]
