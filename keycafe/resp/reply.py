"""RESP2/RESP3 reply encoding: free functions and a few wrapper types.

Hot commands build their replies from the constants and one-line helpers here;
structured replies (CLUSTER SLOTS, COMMAND, INFO ...) go through ``encode``,
which maps Python values onto RESP types for the client's protocol version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, TypeAlias

import attrs

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
QUEUED: Final = b"+QUEUED\r\n"
ZERO: Final = b":0\r\n"
ONE: Final = b":1\r\n"
EMPTY_ARRAY: Final = b"*0\r\n"
NULL2: Final = b"$-1\r\n"
NULL3: Final = b"_\r\n"
NULL_ARRAY2: Final = b"*-1\r\n"


@attrs.frozen
class Simple:
    """A RESP simple string (``+text``)."""

    text: str


@attrs.frozen
class Verbatim:
    """A RESP3 verbatim string (``=txt:...``); a bulk string under RESP2."""

    text: str
    fmt: str = "txt"


@attrs.frozen
class Error:
    """An error reply: ``-<code> <message>``."""

    message: str


@attrs.frozen
class RespSet:
    """A RESP3 set (``~``); an array under RESP2."""

    items: Sequence[Value]


Value: TypeAlias = (
    "bool | int | float | str | bytes | Simple | Verbatim | Error | RespSet"
    " | Sequence[Value] | Mapping[str, Value] | Mapping[bytes, Value] | None"
)


def error(message: str) -> bytes:
    """``-message\\r\\n``; newlines would break framing, so they become spaces."""
    clean = message.replace("\r", " ").replace("\n", " ")
    return b"-%b\r\n" % clean.encode()


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def simple(text: str) -> bytes:
    return b"+%b\r\n" % text.encode()


def null(proto: int) -> bytes:
    return NULL3 if proto == 3 else NULL2


def encode(value: Value, proto: int) -> bytes:
    """Encode a Python value as a reply for RESP ``proto`` (2 or 3)."""
    out: list[bytes] = []
    _encode(value, proto, out)
    return b"".join(out)


def _encode(value: Value, proto: int, out: list[bytes]) -> None:
    if value is None:
        out.append(NULL3 if proto == 3 else NULL2)
    elif isinstance(value, bool):
        if proto == 3:
            out.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            out.append(ONE if value else ZERO)
    elif isinstance(value, int):
        out.append(b":%d\r\n" % value)
    elif isinstance(value, bytes):
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))
    elif isinstance(value, str):
        data = value.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(value, float):
        text = repr(value).encode()
        if proto == 3:
            out.append(b",%b\r\n" % text)
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(value, Simple):
        out.append(simple(value.text))
    elif isinstance(value, Error):
        out.append(error(value.message))
    elif isinstance(value, Verbatim):
        data = value.text.encode()
        if proto == 3:
            body = value.fmt.encode()[:3].ljust(3) + b":" + data
            out.append(b"=%d\r\n%b\r\n" % (len(body), body))
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(value, RespSet):
        out.append(b"%c%d\r\n" % (126 if proto == 3 else 42, len(value.items)))
        for item in value.items:
            _encode(item, proto, out)
    elif isinstance(value, Mapping):
        if proto == 3:
            out.append(b"%%%d\r\n" % len(value))
        else:
            out.append(b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode(key, proto, out)
            _encode(item, proto, out)
    else:
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode(item, proto, out)
