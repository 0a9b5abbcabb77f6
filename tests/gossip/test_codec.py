"""The gossip wire format: round trips, and garbage never escapes as anything but BadPacket."""

from __future__ import annotations

import random
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keycafe.errors import BadPacket
from keycafe.gossip import codec
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberInfo,
    Nack,
    Ping,
    PushPull,
    State,
    Suspect,
    UserMsg,
)

M = MemberInfo(
    node="n1",
    addr=("127.0.0.1", 7946),
    client_addr=("127.0.0.1", 9814),
    incarnation=7,
    state=State.ALIVE,
    meta_version=2,
    meta={"zone": "a"},
)
ALL = [
    Ping(seq=1, target="a", source="b"),
    IndirectPing(seq=2, target="t", target_addr=("h", 3), source="s", nack=True),
    Ack(seq=3, source="x"),
    Nack(seq=4, source="y"),
    Suspect(incarnation=5, node="n", source="m"),
    Alive(member=M),
    Dead(incarnation=6, node="n", source="n"),
    PushPull(join=True, members=(M, M)),
    PushPull(join=False, members=(M,), user_state=b"\x00opaque\xff"),
    UserMsg(payload=b"anything \x00\xff"),
]


def test_every_message_round_trips_in_one_packet() -> None:
    data = codec.packet([codec.encode_message(m) for m in ALL])
    assert data[0] == codec.VERSION
    assert codec.decode_packet_untrusted(data) == ALL
    alive = codec.decode_packet_untrusted(codec.packet([codec.encode_message(ALL[5])]))[0]
    assert isinstance(alive, Alive)
    assert alive.member.meta == {"zone": "a"}


def test_type_numbers_are_the_protocol() -> None:
    # ONLY APPEND: these numbers are on the wire.
    assert (codec.PING, codec.INDIRECT_PING, codec.ACK, codec.NACK) == (1, 2, 3, 4)
    assert (codec.SUSPECT, codec.ALIVE, codec.DEAD, codec.PUSH_PULL) == (5, 6, 7, 8)
    assert codec.USER == 10
    # 9 carried the ring before it moved to keycafe.cluster: reserved, refused.
    with pytest.raises(BadPacket):
        codec.decode_packet_untrusted(b"\x01" + msgpack.packb([[9, 1, 1, "n", ["n"]]]))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" + msgpack.packb([[1, 1, "a", "b"]]),  # unknown version
        b"\x01\xc1",  # msgpack's never-used byte
        b"\x01" + msgpack.packb({"a": 1}),
        b"\x01" + msgpack.packb([[99, 1]]),
        b"\x01" + msgpack.packb([[1, -1, "a", "b"]]),  # negative seq
        b"\x01" + msgpack.packb([[1, 1, "", "b"]]),  # empty node name
        b"\x01" + msgpack.packb([[6, "n", "h", 70000, "h", 1, 0, 0, 0, {}]]),  # bad port
        b"\x01" + msgpack.packb([[6, "n", "h", 1, "h", 1, 0, 1, 0, {}]]),  # alive, not ALIVE
        b"\x01" + msgpack.packb([[6, "n", "h", 1, "h", 1, 0, 0, 0, {"a": 1}]]),  # bad meta
        b"\x01" + b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
    ],
)
def test_garbage_is_a_bad_packet(data: bytes) -> None:
    with pytest.raises(BadPacket):
        codec.decode_packet_untrusted(data)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    try:
        codec.decode_packet_untrusted(b"\x01" + data)
    except BadPacket:
        pass


@given(data=st.data())
def test_mutated_valid_packets_never_raise_out_of_the_core(data: st.DataObject) -> None:
    packet = bytearray(codec.packet([codec.encode_message(m) for m in ALL]))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(packet) - 1))
        packet[i] = data.draw(st.integers(0, 255))
    core = Gossip(M, config=GossipConfig.lan(), rng=random.Random(0), now=0.0)
    core.receive_datagram(bytes(packet), ("127.0.0.1", 1), 1.0)
    core.handle_stream(bytes(packet), ("127.0.0.1", 1), 1.0)
    core.handle_timer(2.0)
    assert core.me.state == State.ALIVE  # whatever it was told


def test_a_push_pull_of_encoded_records_is_the_same_bytes() -> None:
    others = [attrs.evolve(M, node=f"n{i}", meta={}) for i in range(40)]
    for user_state in (b"", b"ring"):
        for members in ([], [M], [M, *others]):
            msg = PushPull(join=True, members=tuple(members), user_state=user_state)
            records = [codec.record(m).data for m in members]
            assert codec.encode_push_pull(True, records, len(records), user_state) == (
                codec.encode_message(msg)
            )


@pytest.mark.parametrize(
    ("index", "value"),
    [(5, 7.0), (2, 7946.0), (7, 2.0), (6, False)],  # equal to ours, not of our types
)
def test_a_known_record_is_reused_only_if_it_is_the_same_bytes(index: int, value: object) -> None:
    held = codec.record(M)
    fields = list(held.fields)
    assert fields[index] == value
    packet = codec.packet([codec.encode_message(PushPull(join=False, members=(M,)))])
    (pp,) = codec.decode_packet_untrusted(packet, lambda node: held)
    assert isinstance(pp, PushPull)
    assert pp.members[0] is M
    fields[index] = value
    forged = msgpack.packb([codec.PUSH_PULL, False, [fields]])
    with pytest.raises(BadPacket):
        codec.decode_packet_untrusted(codec.packet([forged]), lambda node: held)


def _decoded(data: bytes, known: codec.Known | None) -> list[object] | str:
    try:
        return list(codec.decode_packet_untrusted(data, known))
    except BadPacket:
        return "bad packet"


ALL_HELD = set(range(21))


@given(
    data=st.data(),
    user_state=st.sampled_from([b"", b"ring", bytes(300)]),
    held=st.one_of(st.just(ALL_HELD), st.sets(st.integers(0, 20))),
)
def test_a_push_pull_read_through_known_records_is_read_the_same(
    data: st.DataObject, user_state: bytes, held: set[int]
) -> None:
    members = [M] + [attrs.evolve(M, node=f"n{i:03d}" + "x" * (i * 3), meta={}) for i in range(20)]
    records = {m.node: codec.record(m) for i, m in enumerate(members) if i in held}
    body = codec.encode_push_pull(False, [codec.record(m).data for m in members], 21, user_state)
    packet = bytearray(codec.packet([body]))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(packet)))
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "insert" or i == len(packet):
            packet.insert(i, data.draw(st.integers(0, 255)))
        elif op == "set":
            packet[i] = data.draw(st.integers(0, 255))
        else:
            del packet[i]
    assert _decoded(bytes(packet), records.get) == _decoded(bytes(packet), None)


@pytest.mark.parametrize("user_state", [b"", b"ring"])
def test_a_push_pull_of_known_records_is_read_without_decoding_them(
    monkeypatch: pytest.MonkeyPatch, user_state: bytes
) -> None:
    everyone = [M, *(attrs.evolve(M, node=f"m{i}", meta={}) for i in range(40))]
    records = {m.node: codec.record(m) for m in everyone}
    body = codec.encode_push_pull(True, [r.data for r in records.values()], 41, user_state)
    packet = codec.packet([body])
    decoded: list[bytes] = []
    unpackb = msgpack.unpackb

    def counted(data: bytes, **kwargs: Any) -> Any:
        decoded.append(data)
        return unpackb(data, **kwargs)

    monkeypatch.setattr(msgpack, "unpackb", counted)
    (pp,) = codec.decode_packet_untrusted(packet, records.get)
    assert pp == PushPull(join=True, members=tuple(everyone), user_state=user_state)
    assert isinstance(pp, PushPull)
    assert all(a is b for a, b in zip(pp.members, everyone, strict=True))
    assert decoded == []
    for changed in (packet[:-1], packet + b"\x00", packet[:4] + b"\xc4" + packet[5:]):
        with pytest.raises(BadPacket):  # left to the full decoder, which refuses it
            codec.decode_packet_untrusted(changed, records.get)
    assert len(decoded) == 3
