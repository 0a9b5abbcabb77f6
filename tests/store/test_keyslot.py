from __future__ import annotations

import pytest

from keycafe.store.keyslot import SLOT_COUNT, key_slot


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # The Redis Cluster spec's vectors and ones checked against redis-server.
        (b"123456789", 12739),
        (b"Hello, World!", 4054),
        (b"foo", 12182),
        (b"", 0),
    ],
)
def test_vectors(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_hashtags_follow_the_spec() -> None:
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")  # first tag only
    assert key_slot(b"foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: whole key
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")  # from the first {
    assert key_slot(b"{a") == key_slot(b"{a")  # unclosed: whole key


def test_range() -> None:
    assert all(0 <= key_slot(b"k%d" % i) < SLOT_COUNT for i in range(1000))
