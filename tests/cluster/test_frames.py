"""Link frames: framing fed whole or byte by byte, and garbage is only BadPacket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keycafe.cluster import frames
from keycafe.cluster.frames import NEED_DATA, Frame, FrameDecoder, encode_frame
from keycafe.errors import BadPacket

bodies = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=10,
)


def drain(decoder: FrameDecoder) -> list[Frame]:
    out = []
    while isinstance(frame := decoder.next_frame(), Frame):
        out.append(frame)
    assert frame is NEED_DATA
    return out


@given(st.lists(st.tuples(st.integers(0, 100), bodies), max_size=6))
def test_frames_whole_or_byte_by_byte(items: list[tuple[int, object]]) -> None:
    stream = b"".join(encode_frame(kind, body) for kind, body in items)
    whole = FrameDecoder()
    whole.receive_data(stream)
    expected = [Frame(kind, body) for kind, body in items]
    assert drain(whole) == expected
    piecewise = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        piecewise.receive_data(stream[i : i + 1])
        got += drain(piecewise)
    assert got == expected
    assert piecewise.buffered == 0


def test_oversized_frames_are_refused_before_they_arrive() -> None:
    decoder = FrameDecoder(max_frame=100)
    decoder.receive_data((101).to_bytes(4, "big"))
    with pytest.raises(BadPacket):
        decoder.next_frame()
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(frames.DATA, b"x" * (frames.MAX_FRAME + 1))


@given(st.binary(max_size=200))
def test_garbage_raises_only_bad_packet(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(len(data).to_bytes(4, "big") + data)
    try:
        drain(decoder)
    except BadPacket:
        pass


def test_kinds_are_the_protocol() -> None:
    assert (frames.HELLO, frames.PING, frames.PONG, frames.DATA) == (1, 2, 3, 4)
    assert frames.LINK != 1  # never mistaken for a gossip packet (version byte 1)
