"""Reply encoding for RESP2 and RESP3, checked by parsing it back with hiredis."""

from __future__ import annotations

import hiredis
import pytest

from keycafe.resp import reply as resp
from keycafe.resp.reply import Error, RespSet, Simple, Verbatim, encode


def parse(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    value = reader.gets()
    assert reader.gets() is False, "exactly one reply"
    return value


@pytest.mark.parametrize("proto", [2, 3])
def test_round_trip_through_hiredis(proto: int) -> None:
    value = [1, b"two", "three", [None, -4], {"k": b"v"}]
    got = parse(encode(value, proto))
    if proto == 3:
        assert got == [1, b"two", b"three", [None, -4], {b"k": b"v"}]
    else:
        assert got == [1, b"two", b"three", [None, -4], [b"k", b"v"]]


def test_protocol_specific_shapes() -> None:
    assert encode(None, 2) == b"$-1\r\n"
    assert encode(None, 3) == b"_\r\n"
    assert encode(True, 3) == b"#t\r\n"
    assert encode(True, 2) == b":1\r\n"
    assert encode(1.5, 3) == b",1.5\r\n"
    assert encode(1.5, 2) == b"$3\r\n1.5\r\n"
    assert encode(Verbatim("hi"), 3) == b"=6\r\ntxt:hi\r\n"
    assert encode(Verbatim("hi"), 2) == b"$2\r\nhi\r\n"
    assert encode(RespSet([b"a"]), 3) == b"~1\r\n$1\r\na\r\n"
    assert encode(RespSet([b"a"]), 2) == b"*1\r\n$1\r\na\r\n"
    assert encode({"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert encode(Simple("OK"), 2) == b"+OK\r\n"
    assert encode(Error("ERR x"), 2) == b"-ERR x\r\n"


def test_error_text_cannot_break_framing() -> None:
    assert resp.error("ERR a\r\nb") == b"-ERR a  b\r\n"
