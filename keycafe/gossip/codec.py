"""The gossip wire format: msgpack, one module, untrusted input in one place.

A packet is a version byte followed by a msgpack array of messages; each
message is an array whose first element is its type number. A datagram carries
one packet (several messages: pings, acks and piggybacked news), a TCP stream
carries length-prefixed packets. The version byte leaves room for
authentication and encryption (an AES-GCM keyring) without a new format.

Type numbers are the protocol: ONLY APPEND to this list. Number 9 carried
the ring before the ring moved up to keycafe.cluster (it now travels as a
``USER`` broadcast and in push-pull's user state): it stays reserved, never
reused, and a packet with it is a bad packet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import attrs
import msgpack

from keycafe.errors import BadPacket
from keycafe.gossip.messages import (
    MAX_INCARNATION,
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberInfo,
    Message,
    Nack,
    Ping,
    PushPull,
    State,
    Suspect,
    UserMsg,
)

VERSION: Final = 1

PING: Final = 1
INDIRECT_PING: Final = 2
ACK: Final = 3
NACK: Final = 4
SUSPECT: Final = 5
ALIVE: Final = 6
DEAD: Final = 7
PUSH_PULL: Final = 8
_RESERVED_RING: Final = 9  # the ring, before it moved to keycafe.cluster: never reuse
USER: Final = 10

# A push-pull's user state can be far larger than a datagram (a ring of
# thousands of members); the stream frame's own cap (16 MiB) bounds it.
MAX_USER_STATE: Final = 16 * 1024 * 1024

# Generous bounds for untrusted input: a packet can never make us allocate much.
_LIMITS: Final = {
    "max_str_len": 4096,
    # Bytes are only ever as long as the input that holds them: no allocation
    # beyond the packet's size.
    "max_bin_len": MAX_USER_STATE,
    "max_array_len": 65536,
    "max_map_len": 256,
    "max_ext_len": 0,
}


def _member_fields(m: MemberInfo) -> list[Any]:
    return [
        m.node,
        m.addr[0],
        m.addr[1],
        m.client_addr[0],
        m.client_addr[1],
        m.incarnation,
        int(m.state),
        m.meta_version,
        m.meta,
    ]


@attrs.frozen(eq=False)
class Record:
    """A member record with its push-pull encoding, made once per ``MemberInfo``:
    a push-pull of N members joins N of these rather than encoding N records,
    and decoding one equal to a record we hold reuses ours (``decode_packet_untrusted``)."""

    info: MemberInfo
    fields: list[Any]  # as msgpack decodes it; never changed
    data: bytes  # msgpack of ``fields``


def record(info: MemberInfo) -> Record:
    fields = _member_fields(info)
    return Record(info=info, fields=fields, data=msgpack.packb(fields))


# The types of a record's fields as _member_fields makes them (and msgpack decodes them).
_RECORD_TYPES: Final = (str, str, int, str, int, int, int, int, dict)


def encode_push_pull(join: bool, records: Iterable[bytes], count: int, user_state: bytes) -> bytes:
    """``encode_message(PushPull(...))`` from ``count`` already encoded records
    (a msgpack array is its header followed by its elements)."""
    head = [_array_header(4 if user_state else 3), msgpack.packb(PUSH_PULL), msgpack.packb(join)]
    tail = [msgpack.packb(user_state)] if user_state else []
    return b"".join([*head, _array_header(count), *records, *tail])


def encode_message(msg: Message) -> bytes:
    """One message, ready to be put in a packet with ``packet``."""
    fields: list[Any]
    match msg:
        case Ping():
            fields = [PING, msg.seq, msg.target, msg.source]
        case IndirectPing():
            fields = [INDIRECT_PING, msg.seq, msg.target, *msg.target_addr, msg.source, msg.nack]
        case Ack():
            fields = [ACK, msg.seq, msg.source]
        case Nack():
            fields = [NACK, msg.seq, msg.source]
        case Suspect():
            fields = [SUSPECT, msg.incarnation, msg.node, msg.source]
        case Alive():
            fields = [ALIVE, *_member_fields(msg.member)]
        case Dead():
            fields = [DEAD, msg.incarnation, msg.node, msg.source]
        case PushPull():
            fields = [PUSH_PULL, msg.join, [_member_fields(m) for m in msg.members]]
            if msg.user_state:
                fields.append(msg.user_state)
        case UserMsg():
            fields = [USER, msg.payload]
    return msgpack.packb(fields)  # type: ignore[no-any-return]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def packet(encoded: list[bytes]) -> bytes:
    """A packet of already encoded messages (a msgpack array is its header
    followed by its elements, so nothing is encoded twice)."""
    return bytes([VERSION]) + _array_header(len(encoded)) + b"".join(encoded)


# The version byte plus the largest array header: room to reserve before the
# number of messages in a packet is known.
PACKET_OVERHEAD: Final = 1 + 5


def _str(v: Any) -> str:
    if type(v) is not str or not v:
        raise BadPacket("expected a non-empty string")
    return v


def _int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise BadPacket("expected an integer in range")
    return v


def _incarnation(v: Any) -> int:
    """Incarnations and metadata versions stop at MAX_INCARNATION (messages.py)."""
    return _int(v, 0, MAX_INCARNATION)


def _addr(host: Any, port: Any) -> Address:
    return (_str(host), _int(port, 0, 65535))


class Held(Protocol):
    """A member record as the receiver holds it, with its encoding (a
    ``Record``, or the core's own member entries)."""

    @property
    def info(self) -> MemberInfo: ...
    @property
    def fields(self) -> list[Any]: ...
    @property
    def data(self) -> bytes: ...


# Looks up the record we hold for a member id, if any.
Known = Callable[[str], Held | None]


def _member(f: Any, known: Known | None = None) -> MemberInfo:
    if type(f) is not list or len(f) != 9:
        raise BadPacket("bad member record")
    if known is not None and type(f[0]) is str:
        held = known(f[0])
        # Equal values of the very types we encode: the same bytes on the wire,
        # so validating them again could only give back what we hold.
        if held is not None and held.fields == f and tuple(map(type, f)) == _RECORD_TYPES:
            return held.info
    meta = f[8]
    if type(meta) is not dict or not all(
        type(k) is str and type(v) is str for k, v in meta.items()
    ):
        raise BadPacket("bad member metadata")
    try:
        state = State(_int(f[6], 0, 3))
    except ValueError as exc:  # pragma: no cover - _int bounds it already
        raise BadPacket("bad member state") from exc
    return MemberInfo(
        node=_str(f[0]),
        addr=_addr(f[1], f[2]),
        client_addr=_addr(f[3], f[4]),
        incarnation=_incarnation(f[5]),
        state=state,
        meta_version=_incarnation(f[7]),
        meta=meta,
    )


def _message(m: Any, known: Known | None = None) -> Message:
    if type(m) is not list or not m:
        raise BadPacket("a message must be a non-empty array")
    kind, n = m[0], len(m)
    if kind == PING and n == 4:
        return Ping(seq=_int(m[1]), target=_str(m[2]), source=_str(m[3]))
    if kind == INDIRECT_PING and n == 7:
        if type(m[6]) is not bool:
            raise BadPacket("bad nack flag")
        return IndirectPing(
            seq=_int(m[1]),
            target=_str(m[2]),
            target_addr=_addr(m[3], m[4]),
            source=_str(m[5]),
            nack=m[6],
        )
    if kind == ACK and n == 3:
        return Ack(seq=_int(m[1]), source=_str(m[2]))
    if kind == NACK and n == 3:
        return Nack(seq=_int(m[1]), source=_str(m[2]))
    if kind == SUSPECT and n == 4:
        return Suspect(incarnation=_incarnation(m[1]), node=_str(m[2]), source=_str(m[3]))
    if kind == ALIVE and n == 10:
        member = _member(m[1:])
        if member.state != State.ALIVE:
            raise BadPacket("alive message with a non-alive state")
        return Alive(member=member)
    if kind == DEAD and n == 4:
        return Dead(incarnation=_incarnation(m[1]), node=_str(m[2]), source=_str(m[3]))
    if kind == PUSH_PULL and n in (3, 4):
        if type(m[1]) is not bool or type(m[2]) is not list:
            raise BadPacket("bad push-pull")
        user_state = m[3] if n == 4 else b""
        if type(user_state) is not bytes:
            raise BadPacket("bad push-pull user state")
        return PushPull(
            join=m[1], members=tuple(_member(x, known) for x in m[2]), user_state=user_state
        )
    if kind == USER and n == 2:
        if type(m[1]) is not bytes:
            raise BadPacket("bad user message")
        return UserMsg(payload=m[1])
    raise BadPacket(f"unknown message type {kind!r} with {n} fields")


def _agreed_push_pull(data: bytes, known: Known) -> PushPull | None:
    """A packet holding one push-pull whose every record is, byte for byte, a
    record ``known`` holds: read by looking each one up instead of decoding it
    (a push-pull of N agreeing records then costs N look-ups, not N msgpack
    decodes and checks). None if anything differs: the full decoder decides.

    Only input the full decoder reads the same way is taken here: the same
    headers (any array header size msgpack reads), our own records' bytes, and
    a user state that is one bin object ending the packet."""
    try:
        if data[1] != 0x91 or data[2] not in (0x93, 0x94) or data[3] != PUSH_PULL:
            return None
        if data[4] not in (0xC2, 0xC3):
            return None
        head = data[5]
        if head & 0xF0 == 0x90:
            count, at = head & 0x0F, 6
        elif head == 0xDC:
            count, at = int.from_bytes(data[6:8], "big"), 8
        elif head == 0xDD:
            count, at = int.from_bytes(data[6:10], "big"), 10
        else:
            return None
        if count > _LIMITS["max_array_len"]:
            return None
        infos: list[MemberInfo] = []
        for _ in range(count):
            if data[at] != 0x99:  # an array of 9, then the id: fixstr or str 8
                return None
            size = data[at + 1]
            if 0xA1 <= size <= 0xBF:
                start, size = at + 2, size - 0xA0
            elif size == 0xD9:
                start, size = at + 3, data[at + 2]
            else:
                return None
            held = known(data[start : start + size].decode())
            if held is None or not data.startswith(held.data, at):
                return None
            infos.append(held.info)
            at += len(held.data)
        user_state = b""
        if data[2] == 0x94:  # then one bin object, and nothing after it
            kind = data[at]
            width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(kind)
            if width is None:
                return None
            size = int.from_bytes(data[at + 1 : at + 1 + width], "big")
            at += 1 + width
            if size > MAX_USER_STATE or at + size != len(data):
                return None
            user_state = data[at:]
        elif at != len(data):
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    return PushPull(join=data[4] == 0xC3, members=tuple(infos), user_state=user_state)


def decode_packet_untrusted(data: bytes, known: Known | None = None) -> list[Message]:
    """Decode a packet from the network; raises only ``BadPacket``. A push-pull's
    records equal to what ``known`` returns for their ids come back as the very
    ``MemberInfo`` it holds (so a push-pull between agreeing members is cheap)."""
    if not data or data[0] != VERSION:
        raise BadPacket("unknown packet version")
    if known is not None:
        agreed = _agreed_push_pull(data, known)
        if agreed is not None:
            return [agreed]
    try:
        body = msgpack.unpackb(data[1:], raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises several types for garbage
        raise BadPacket(f"undecodable packet: {type(exc).__name__}") from exc
    if type(body) is not list:
        raise BadPacket("a packet must be an array of messages")
    return [_message(m, known) for m in body]
