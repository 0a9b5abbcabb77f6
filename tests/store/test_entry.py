from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keycafe.store import entry


@given(
    value=st.binary(max_size=200),
    expires=st.integers(0, 2**63 - 1),
    stamp=st.integers(0, 2**64 - 1),
    writer=st.integers(0, 2**16 - 1),
)
def test_pack_round_trip(value: bytes, expires: int, stamp: int, writer: int) -> None:
    rec = entry.pack(value, expires, stamp, writer)
    assert entry.value_of(rec) == value
    assert entry.value_len(rec) == len(value)
    assert entry.expires_of(rec) == expires
    assert entry.stamp_of(rec) == stamp
    assert entry.writer_of(rec) == writer
    assert entry.reply_of(rec) == b"$%d\r\n" % len(value) + value + b"\r\n"
    assert rec.startswith(entry.NO_EXPIRY) == (expires == 0)
    re = entry.restamp(rec, 5, 6, 7)
    assert entry.value_of(re) == value
    assert (entry.expires_of(re), entry.stamp_of(re), entry.writer_of(re)) == (5, 6, 7)
