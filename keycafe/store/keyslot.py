"""Key to hash slot, exactly as Redis Cluster does it."""

from __future__ import annotations

from binascii import crc_hqx
from typing import Final

# Redis Cluster spec, "Keys distribution model": 16384 slots.
SLOT_COUNT: Final = 16384


def key_slot(key: bytes) -> int:
    """CRC16-XMODEM of the key (or of its first non-empty ``{hashtag}``) mod 16384.

    ``binascii.crc_hqx(data, 0)`` is CRC16-CCITT/XMODEM, the variant the spec uses.
    """
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) & 16383
