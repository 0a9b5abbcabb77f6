"""Incremental RESP request parser: a sans-I/O core.

Two engines share the stream. hiredis (C) parses well-formed multibulk
requests, which is nearly all traffic; the pure-Python engine below is the
authority for everything else: inline commands, requests that straddle reads,
limits, and Redis's exact protocol-error wording. hiredis only ever starts at a
request boundary with an empty buffer, and the moment it meets anything unusual
(a partial request, a non-bulk element, a header it rejects) the rest of the
bytes are handed to the Python engine at that exact offset. The offset is known
because every request hiredis returned was made of bulk strings only (checked)
and hiredis accepts only canonical lengths, so a request's wire size is a
function of its arguments (``_wire_size``).
"""

from __future__ import annotations

import re
from typing import Final

import attrs
import hiredis

from keycafe.errors import ProtocolError

Request = list[bytes]

_STAR: Final = 42  # b"*"
_DOLLAR: Final = 36  # b"$"
_PROBE: Final = b"*0\r\n"
# hiredis returns simple strings (+), verbatim strings (=) and big numbers (()
# as bytes, indistinguishable from bulk strings, and attributes (|) change what
# follows. Every element header follows a CRLF, so a read with none of these
# after a CRLF has none of them; a read that does (perhaps only inside a value)
# goes to the Python engine, which rejects them as Redis does.
_SUSPECT: Final = re.compile(rb"\r\n[+=(|]").search


def _suspect(data: bytes) -> bool:
    """Whether ``data`` may hold one of those headers. Four byte searches
    (memchr: an int needle; a bytes needle costs several times more) settle
    most reads in a twentieth of the regex's time."""
    if not (43 in data or 61 in data or 40 in data or 124 in data):
        return False  # none of + = ( | anywhere
    return _SUSPECT(data) is not None


# Redis's string2ll: optional '-', no '+', no leading zeros, at most 19 digits.
_STRICT_INT = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")


@attrs.frozen(kw_only=True)
class Limits:
    """Input limits, named after the Redis settings they mirror."""

    # proto-max-bulk-len: Redis's default, 512 MB per argument.
    max_bulk_len: int = 512 * 1024 * 1024
    # Redis allows up to INT_MAX arguments; 1M still lets MSET take 500k pairs
    # while a bogus header cannot make a reader pre-size a list of 2**31 slots.
    max_multibulk_len: int = 1024 * 1024
    # PROTO_INLINE_MAX_SIZE: 64 KB for an inline line and for any header line.
    max_inline_len: int = 64 * 1024


def strict_int(raw: bytes | bytearray) -> int | None:
    """Parse an integer as Redis's ``string2ll`` does; None if not canonical."""
    if _STRICT_INT.fullmatch(raw) is None:
        return None
    return int(raw)


def _wire_size(req: Request) -> int:
    """Bytes a canonical multibulk encoding of ``req`` takes."""
    size = 3 + len(str(len(req)))  # "*N\r\n"
    for arg in req:
        n = len(arg)
        size += 5 + len(str(n)) + n  # "$N\r\n" + body + "\r\n"
    return size


class RequestParser:
    """Turns a byte stream from one client into requests (lists of bytes).

    ``receive_data(data)`` returns every request completed by ``data``, in
    order; it returns a batch rather than one request per call so that the
    server pays one Python call per read, not per pipelined command. After a
    protocol error, ``error`` holds it, the batch ends just before the bad
    request, and the parser takes no more input (Redis replies and closes).
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.error: ProtocolError | None = None
        self._reader = hiredis.Reader()
        # Bytes owned by the Python engine; when non-empty they start at a
        # request boundary and hiredis's buffer is empty.
        self._buf = bytearray()
        # Progress through a multibulk request at the start of ``_buf`` that is
        # still incomplete: (count, args so far, offset of the next argument).
        # Resuming from it keeps a huge request arriving in many reads O(n).
        self._partial: tuple[int, Request, int] | None = None
        # hiredis handles a chunk only if no request inside it could break a
        # limit: a header line, a bulk, or (at >= 6 bytes each) the count.
        lim = self.limits
        self._fast_max = min(lim.max_inline_len, lim.max_bulk_len, 6 * lim.max_multibulk_len)

    def receive_data(self, data: bytes) -> list[Request]:
        """Feed bytes; return the requests they complete."""
        out: list[Request] = []
        if self.error is not None or not data:
            return out
        if self._buf:
            self._buf += data
            rest = self._python_drain(out)
        else:
            rest = data
        while rest:
            if rest[0] == _STAR and len(rest) <= self._fast_max:
                rest = self._hiredis_drain(rest, out)
                if not rest:
                    break
            # Whatever hiredis gave back (or never saw) goes to the authority,
            # which consumes at least one request before it hands back.
            self._buf = bytearray(rest)
            rest = self._python_drain(out)
        return out

    @property
    def buffered(self) -> int:
        """Bytes of a request received but not yet complete."""
        return len(self._buf)

    # -- fast path -------------------------------------------------------------

    def _hiredis_drain(self, data: bytes, out: list[Request]) -> bytes:
        """Parse ``data`` (starting at a boundary) with hiredis.

        Returns the unparsed remainder (empty, or bytes for the Python engine).
        """
        if _suspect(data):
            return data  # might hold an element hiredis would pass off as bulk
        reader = self._reader
        reader.feed(data)
        start = len(out)
        gets = reader.gets
        try:
            while True:
                req = gets()
                if req is False:
                    # hiredis cannot say whether it stopped at a boundary or
                    # inside a request (it eats a lone "*" into its state), so
                    # probe: an idle reader parses "*0\r\n" into exactly [],
                    # which Redis ignores anyway. Anything else means a partial
                    # request, which the Python engine takes over.
                    reader.feed(_PROBE)
                    probe = gets()
                    if probe.__class__ is list and not probe:
                        return b""
                    break
                if req.__class__ is list and req:
                    for arg in req:
                        if arg.__class__ is not bytes:
                            break
                    else:
                        out.append(req)
                        continue
                break  # not an array of bulk strings: let the authority judge
        except hiredis.ProtocolError:
            pass
        # Hand over at the end of the last request hiredis got right.
        self._reader = hiredis.Reader()
        consumed = 0
        for i in range(start, len(out)):
            consumed += _wire_size(out[i])
        return data[consumed:]

    # -- the authority ---------------------------------------------------------

    def _python_drain(self, out: list[Request]) -> bytes:
        """Parse requests from ``self._buf``.

        Stops when the buffer holds only part of a request (kept), on an error,
        or at a boundary where a multibulk request starts and the buffer is small
        enough for hiredis: those bytes are returned for the fast path.
        """
        buf = self._buf
        pos = 0
        # hiredis would give back whatever holds a suspicious sequence, so hand
        # over only past the next one; remembering where it is keeps a read
        # full of them linear (re-scanning per request was quadratic).
        suspect_at = -1
        try:
            while pos < len(buf):
                if buf[pos] == _STAR and pos > 0 and len(buf) - pos <= self._fast_max:
                    if pos > suspect_at:
                        found = _SUSPECT(buf, pos)
                        suspect_at = len(buf) if found is None else found.start()
                    if suspect_at == len(buf):
                        rest = bytes(buf[pos:])
                        self._buf = bytearray()
                        return rest
                parsed = self._parse_one(buf, pos)
                if parsed is None:
                    break
                req, pos = parsed
                if req:
                    out.append(req)
        except ProtocolError as exc:
            self.error = exc
            self._buf = bytearray()
            return b""
        del buf[:pos]
        return b""

    def _parse_one(self, buf: bytearray, pos: int) -> tuple[Request, int] | None:
        """One request at ``pos``: (args, next pos), or None if incomplete."""
        lim = self.limits
        end = len(buf)
        if buf[pos] != _STAR:
            return self._parse_inline(buf, pos)
        if self._partial is not None and pos == 0:
            count, args, p = self._partial
            self._partial = None
        else:
            nl = buf.find(b"\r", pos)
            if nl == -1:
                if end - pos > lim.max_inline_len:
                    raise ProtocolError("Protocol error: too big mbulk count string")
                return None
            if nl + 1 >= end:
                return None
            parsed = strict_int(buf[pos + 1 : nl])
            if parsed is None or parsed > lim.max_multibulk_len:
                raise ProtocolError("Protocol error: invalid multibulk length")
            count = parsed
            p = nl + 2
            if count <= 0:
                return [], p  # Redis ignores empty and negative multibulks
            args = []
        while len(args) < count:
            if p >= end:
                self._partial = (count, args, p - pos)
                return None
            if buf[p] != _DOLLAR:
                got = chr(buf[p])
                raise ProtocolError(f"Protocol error: expected '$', got '{got}'")
            nl = buf.find(b"\r", p)
            if nl == -1:
                if end - p > lim.max_inline_len:
                    raise ProtocolError("Protocol error: too big bulk count string")
                self._partial = (count, args, p - pos)
                return None
            if nl + 1 >= end:
                self._partial = (count, args, p - pos)
                return None
            n = strict_int(buf[p + 1 : nl])
            if n is None or n < 0 or n > lim.max_bulk_len:
                raise ProtocolError("Protocol error: invalid bulk length")
            body = nl + 2
            if body + n + 2 > end:
                self._partial = (count, args, p - pos)
                return None
            args.append(bytes(buf[body : body + n]))
            p = body + n + 2
        return args, p

    def _parse_inline(self, buf: bytearray, pos: int) -> tuple[Request, int] | None:
        nl = buf.find(b"\n", pos)
        if nl == -1:
            if len(buf) - pos > self.limits.max_inline_len:
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line_end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        args = split_args(bytes(buf[pos:line_end]))
        if args is None:
            raise ProtocolError("Protocol error: unbalanced quotes in request")
        return args, nl + 1


_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def split_args(line: bytes) -> list[bytes] | None:
    """Split an inline command line as Redis's ``sdssplitargs`` does.

    Handles double quotes (with ``\\n \\r \\t \\b \\a \\xHH`` escapes) and single
    quotes (with ``\\'``). Returns None for unbalanced quotes, or a closing quote
    not followed by a space.
    """
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        inq = insq = False
        while True:
            if inq:
                if i >= n:
                    return None
                c = line[i]
                if (
                    c == 92
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if i >= n:
                    return None
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\n\r\v\f":
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))
