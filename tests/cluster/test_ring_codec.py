"""The ring's wire format: round trips, bounds, and only BadPacket for garbage."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keycafe.cluster import ring_codec
from keycafe.cluster.ring_codec import decode_ring_untrusted, encode_ring
from keycafe.cluster.ring_record import MAX_EPOCH, MAX_TERM, Ring
from keycafe.errors import BadPacket

RINGS = [
    Ring(epoch=3, term=2, coordinator="n1", members=("n1", "n2")),
    Ring(epoch=4, term=2, coordinator="n1", members=("n1", "n2"), pending=("n1", "n2", "n3")),
    Ring(epoch=MAX_EPOCH, term=MAX_TERM, coordinator="n1", members=("n1",)),
    Ring(epoch=5, term=2, coordinator="n1", members=("n1", "n2", "n3"), down=("n2",)),
    Ring(epoch=6, term=2, coordinator="n1", members=("n1", "n2"), pending=("n1",), down=("n2",)),
]


@pytest.mark.parametrize("ring", RINGS)
def test_a_ring_round_trips(ring: Ring) -> None:
    assert decode_ring_untrusted(encode_ring(ring)) == ring


def test_kind_numbers_are_the_protocol() -> None:
    assert ring_codec.RING == 1  # ONLY APPEND


@pytest.mark.parametrize(
    "fields",
    [
        [1, 1, 1, "n1", ["n1"], [], ["n2"]],  # down, but not a member
        [1, 1, 1, "n1", ["n1"], [], "n1"],
        [1, 1, MAX_TERM + 1, "n1", ["n1"]],  # a term above the bound
        [1, MAX_EPOCH + 1, 1, "n1", ["n1"]],  # an epoch above the bound
        [1, 1, 2**64 - 1, "n1", ["n1"]],
        [1, -1, 1, "n1", ["n1"]],
        [1, 1, True, "n1", ["n1"]],
        [True, 1, 1, "n1", ["n1"]],
        [2, 1, 1, "n1", ["n1"]],  # an unknown kind
        [1, 1, 1, "", ["n1"]],
        [1, 1, 1, "n1", []],  # never an empty ring
        [1, 1, 1, "n1", ["n1", ""]],
        [1, 1, 1, "n1", ["n1"], "n2"],
        [1, 1, 1, "n1"],
    ],
)
def test_a_bad_ring_is_a_bad_packet(fields: list[object]) -> None:
    with pytest.raises(BadPacket):
        decode_ring_untrusted(msgpack.packb(fields))


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    try:
        decode_ring_untrusted(data)
    except BadPacket:
        pass


@given(data=st.data())
def test_mutated_rings_raise_only_bad_packet(data: st.DataObject) -> None:
    payload = bytearray(encode_ring(RINGS[1]))
    for _ in range(data.draw(st.integers(1, 5))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_ring_untrusted(bytes(payload))
    except BadPacket:
        pass


def _three(
    down: tuple[str, ...], down_epochs: tuple[int, ...], down_boots: tuple[str, ...] = ()
) -> Ring:
    """Epoch 9 of a ring of a, b and c, with ``down`` and what it records."""
    return Ring(
        epoch=9,
        term=2,
        coordinator="a",
        members=("a", "b", "c"),
        down=down,
        down_epochs=down_epochs,
        down_boots=down_boots,
    )


def test_the_epochs_members_went_down_in_round_trip_and_are_checked() -> None:
    ring = _three(down=("c", "b"), down_epochs=(7, 9))
    assert decode_ring_untrusted(encode_ring(ring)) == ring
    assert ring.newest_copies(("b", "c")) == {"b"}  # b went down after c
    assert ring.down_since("c") == 7
    for since in ([7], [7, 9, 9], [7, -1], [7, "9"], [7, 10]):  # 10: after the ring's epoch
        bad = [ring_codec.RING, 9, 2, "a", ["a", "b", "c"], [], ["c", "b"], since]
        with pytest.raises(BadPacket):
            decode_ring_untrusted(msgpack.packb(bad))
    together = _three(down=("b", "c"), down_epochs=(9, 9))
    assert together.newest_copies(("b", "c")) == {"b", "c"}  # both as fresh


def test_the_boot_ids_of_members_down_round_trip_and_are_bounded() -> None:
    ring = _three(down=("c", "b"), down_epochs=(7, 9), down_boots=("c.1", ""))
    assert decode_ring_untrusted(encode_ring(ring)) == ring
    assert ring.down_boot("c") == "c.1"
    base = [ring_codec.RING, 9, 2, "a", ["a", "b", "c"], [], ["c", "b"], [7, 9]]
    for boots in (["c.1"], ["x" * (ring_codec.MAX_BOOT + 1), ""], [1, ""]):
        with pytest.raises(BadPacket):
            decode_ring_untrusted(msgpack.packb([*base, boots]))
