"""The client side of RESP (sans-I/O): encoding commands, parsing replies.

``encode_command`` writes a request as an array of bulk strings, the only form
a server must accept. ``ReplyParser`` is a stream parser in h11's shape
(``feed(bytes)``, then ``next_reply()`` until it returns ``NEED_DATA``) over
hiredis's C reader; an error reply comes back as a value, a
``keycafe.errors.ResponseError`` (or ``RedirectError`` for MOVED/ASK), never
raised, so a pipeline's replies stay in order. Garbage raises ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import hiredis

from keycafe.errors import ProtocolError, RedirectError, ResponseError

Arg = bytes | str | int | float


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def _bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8", "surrogateescape")
    if isinstance(arg, bool):
        raise TypeError("a bool is not a RESP argument: pass 0/1 or a string")
    if isinstance(arg, (int, float)):
        return repr(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} as a RESP argument")


def encode_command(args: Iterable[Arg]) -> bytes:
    """One request: ``*<n>`` then each argument as a bulk string."""
    parts = [_bytes(a) for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def _error(message: str) -> ResponseError:
    if message.startswith(("MOVED ", "ASK ")):
        try:
            return RedirectError(message)
        except ValueError:
            pass  # malformed: an ordinary error reply
    return ResponseError(message)


class ReplyParser:
    """Replies out of a byte stream; ``decode`` turns bulk strings into str."""

    def __init__(self, decode: bool = False) -> None:
        self._reader = hiredis.Reader(
            replyError=_error,
            protocolError=ProtocolError,
            encoding="utf-8" if decode else None,
            # Lossless and never raises: bytes that are not UTF-8 survive as
            # surrogates (encode with "surrogateescape" to get them back).
            errors="surrogateescape" if decode else None,
        )

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def next_reply(self) -> Any:
        """The next complete reply, or ``NEED_DATA``."""
        try:
            reply = self._reader.gets()
        except hiredis.ProtocolError as exc:
            raise ProtocolError(str(exc)) from exc
        return NEED_DATA if reply is False else reply
