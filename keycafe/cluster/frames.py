"""Node-to-node stream frames: the wire format of peer links (sans-I/O).

A frame is a 4-byte big-endian length, then that many bytes: a marker byte
(``LINK``, which tells a peer link from a gossip stream sharing the cluster
port: gossip packets start with their own version byte, 1) and a msgpack array
``[kind, body]``. Kind numbers are the protocol: ONLY APPEND.

``FrameDecoder`` is a stream codec in h11's shape: ``receive_data(bytes)``, then
``next_frame()`` until it returns ``NEED_DATA``; untrusted input raises only
``BadPacket`` (oversized frame, wrong marker, undecodable body).
"""

from __future__ import annotations

import struct
from typing import Any, Final

import attrs
import msgpack

from keycafe.errors import BadPacket

LINK: Final = 0x4C  # "L"
HEADER: Final = struct.Struct(">I")
# Largest frame accepted: entries travel in batches of about 1 MiB, so a
# frame holds a batch plus one entry, whose key and value are each at most
# MAX_VALUE (a node's proto-max-bulk-len is held to it).
MAX_FRAME: Final = 16 * 1024 * 1024
MAX_VALUE: Final = 7 * 1024 * 1024

# Kinds. ONLY APPEND: the numbers are on the wire.
HELLO: Final = 1  # body: [node id, protocol version]; the first frame either way
PING: Final = 2  # body: any; answered by PONG with the same body
PONG: Final = 3
DATA: Final = 4  # body: application payload (replication: later)
# Slot hand-off (keycafe/cluster/handoff.py). Entries travel as
# [key, value or None, expires_ms, stamp, writer] (store.engine.Exported);
# (term, epoch) is the version of the ring proposal the frame belongs to.
BATCH: Final = 5  # [transfer id, term, epoch, slot, [entry, ...]]: part of a handed-over slot
DONE: Final = 6  # [transfer id, term, epoch, batches sent, [slot, ...]]: the transfer's end
ACK: Final = 7  # [transfer id, batches received, [slot not kept, ...]]: answers DONE
FORWARD: Final = 8  # [term, epoch, slot, [entry, ...]]: writes made meanwhile to a moving slot
# Replication (keycafe/cluster/replication.py); (term, epoch): the sender's ring.
REPL: Final = 9  # [term, epoch, frame number, [[slot, [entry, ...]], ...]]: a primary's writes
REPL_ACK: Final = 10  # [term, epoch, frame number, [slot refused, ...]]: answers REPL
# Anti-entropy (keycafe/cluster/antientropy.py); (term, epoch): the sender's ring.
AE_DIGEST: Final = 11  # [term, epoch, [[slot, parts, [digest per part]], ...]]: primary's
AE_KEYS: Final = 12  # [term, epoch, [[slot, parts, [part...], [[key, stamp, writer]...]]...]]
AE_SYNC: Final = 13  # [term, epoch, [[slot, [entry, ...], [key wanted, ...]], ...]]
# The minority side's lease (keycafe/cluster/lease.py): any frame from a member
# counts; this one goes to every ring member each third of a lease, whatever
# else was sent (the body is informational: nothing reads it).
HEARTBEAT: Final = 14  # [term, epoch, ping stamp | nil, pong (echoed ping) | nil]

# 2: hand-off frames carry the proposal's (term, epoch). 3: FORWARD names its
# generation, DONE states a generation and how many of its forwards went
# before it, ACK whether any were missing (keycafe/cluster/handoff.py).
PROTOCOL_VERSION: Final = 3

_LIMITS: Final = {
    "max_str_len": MAX_FRAME,
    "max_bin_len": MAX_FRAME,
    "max_array_len": 1 << 20,
    "max_map_len": 1 << 16,
    "max_ext_len": 0,
}


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@attrs.frozen
class Frame:
    kind: int
    body: Any


def encode_frame(kind: int, body: Any) -> bytes:
    body_bytes: bytes = msgpack.packb([kind, body], use_bin_type=True)
    payload = bytes([LINK]) + body_bytes
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


def decode_payload_untrusted(payload: bytes) -> Frame:
    """One frame's payload (without the length prefix)."""
    if not payload or payload[0] != LINK:
        raise BadPacket("not a link frame")
    try:
        value = msgpack.unpackb(payload[1:], raw=False, strict_map_key=False, **_LIMITS)
    except Exception as exc:  # msgpack raises several types for garbage
        raise BadPacket(f"undecodable frame: {type(exc).__name__}") from exc
    if type(value) is not list or len(value) != 2 or type(value[0]) is not int:
        raise BadPacket("a frame must be [kind, body]")
    return Frame(value[0], value[1])


class FrameDecoder:
    """Splits a byte stream into frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | _NeedData:
        buf = self._buf
        if len(buf) < HEADER.size:
            return NEED_DATA
        (size,) = HEADER.unpack_from(buf)
        if size > self.max_frame:
            raise BadPacket(f"frame of {size} bytes announced (limit {self.max_frame})")
        if len(buf) < HEADER.size + size:
            return NEED_DATA
        payload = bytes(buf[HEADER.size : HEADER.size + size])
        del buf[: HEADER.size + size]
        return decode_payload_untrusted(payload)

    @property
    def buffered(self) -> int:
        return len(self._buf)
