"""Argument parsing shared by command handlers, with Redis's error wording."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from keycafe.resp.parser import strict_int
from keycafe.server.errors import CommandError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

NOT_AN_INTEGER: Final = "ERR value is not an integer or out of range"
SYNTAX: Final = "ERR syntax error"


def parse_int(raw: bytes, message: str = NOT_AN_INTEGER) -> int:
    """A signed 64-bit integer written canonically, else ``CommandError``."""
    n = strict_int(raw)
    if n is None or not INT64_MIN <= n <= INT64_MAX:
        raise CommandError(message)
    return n


def invalid_expire(command: str) -> CommandError:
    return CommandError(f"ERR invalid expire time in '{command}' command")


def expiry_from_option(option: bytes, raw: bytes, now: int, command: str) -> int:
    """Absolute expiry (unix ms) for SET/GETEX's EX, PX, EXAT or PXAT ``raw``."""
    n = parse_int(raw)
    upper = option.upper()
    seconds = upper in (b"EX", b"EXAT")
    if n <= 0 or (seconds and n > INT64_MAX // 1000):
        raise invalid_expire(command)
    ms = n * 1000 if seconds else n
    if upper in (b"EX", b"PX"):
        ms += now
        if ms > INT64_MAX:
            raise invalid_expire(command)
    return ms


@lru_cache(maxsize=256)
def glob_matcher(pattern: bytes) -> re.Pattern[bytes]:
    """Compile a Redis glob (``* ? [abc] [^a-z] \\x``) as Redis's stringmatchlen reads it."""
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < n:
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == b"[":
            j = i + 1
            negate = j < n and pattern[j : j + 1] == b"^"
            if negate:
                j += 1
            items = bytearray()
            while j < n and pattern[j : j + 1] != b"]":
                if pattern[j : j + 1] == b"\\" and j + 1 < n:
                    j += 1
                    items += re.escape(pattern[j : j + 1])
                elif (
                    j + 2 < n and pattern[j + 1 : j + 2] == b"-" and pattern[j + 2 : j + 3] != b"]"
                ):
                    lo, hi = sorted((pattern[j], pattern[j + 2]))
                    items += b"%b-%b" % (re.escape(bytes([lo])), re.escape(bytes([hi])))
                    j += 2
                else:
                    items += re.escape(pattern[j : j + 1])
                j += 1
            i = j  # at "]" (or past the end: Redis treats an open class as closed)
            if items:
                out += b"[%b%b]" % (b"^" if negate else b"", bytes(items))
            else:
                out += b"[^\\x00-\\xff]" if not negate else b"[\\x00-\\xff]"
        else:
            out += re.escape(c)
        i += 1
    return re.compile(bytes(out), re.DOTALL)
