"""The ring: a pure function from members to slot owners."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycafe.cluster.ring import RingConfig, build_table, moved, slot_owners, token
from keycafe.cluster.slot_table import NodeAddr
from keycafe.store.keyslot import SLOT_COUNT


def names(n: int, prefix: str = "node") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def primaries(owners: tuple[tuple[str, ...], ...]) -> Counter[str]:
    return Counter(o[0] for o in owners)


def test_tokens_are_stable() -> None:
    # The ring must not change between versions or processes: a token is the
    # first 8 bytes (big-endian) of BLAKE2b over "<node id>/<index>".
    expected = int.from_bytes(hashlib.blake2b(b"node000/0", digest_size=8).digest(), "big")
    assert token("node000", 0) == expected
    assert token("node000", 0) != token("node000", 1)


def test_same_table_from_the_same_members_in_any_order() -> None:
    members = names(7)
    shuffled = members[:]
    random.Random(3).shuffle(shuffled)
    assert slot_owners(members) == slot_owners(shuffled) == slot_owners(set(members))


def test_every_slot_has_distinct_owners() -> None:
    owners = slot_owners(names(5), RingConfig(replicas=3))
    assert len(owners) == SLOT_COUNT
    assert all(len(o) == 3 and len(set(o)) == 3 for o in owners)
    assert all(len(o) == 2 for o in slot_owners(names(2), RingConfig(replicas=3)))


def test_no_members_no_owners_and_one_member_owns_all() -> None:
    assert set(slot_owners([])) == {()}
    assert set(slot_owners(["solo"])) == {("solo",)}


@pytest.mark.parametrize("n", [3, 5, 10, 20, 50, 100])
def test_balance_within_ten_percent(n: int) -> None:
    counts = primaries(slot_owners(names(n)))
    assert max(counts.values()) / (SLOT_COUNT / n) <= 1.10
    assert len(counts) == n  # everyone owns something


@pytest.mark.parametrize("n", [3, 10, 30, 100])
def test_a_join_moves_about_one_nth(n: int) -> None:
    before = slot_owners(names(n))
    after = slot_owners([*names(n), "joiner"])
    fraction = moved(before, after) / SLOT_COUNT
    assert fraction <= 1.2 / (n + 1)
    assert primaries(after)["joiner"] > 0


@pytest.mark.parametrize("n", [4, 10, 30, 100])
def test_a_leave_moves_about_one_nth(n: int) -> None:
    before = slot_owners(names(n))
    after = slot_owners(names(n)[1:])
    assert moved(before, after) / SLOT_COUNT <= 1.2 / n + 0.01


@settings(max_examples=20, deadline=None)
@given(st.sets(st.text("abcdef0123456789", min_size=4, max_size=12), min_size=1, max_size=12))
def test_any_member_set_gives_a_full_balanced_table(members: set[str]) -> None:
    owners = slot_owners(members, RingConfig(replicas=2))
    assert all(o and o[0] in members for o in owners)
    counts = primaries(owners)
    n = len(members)
    assert max(counts.values()) <= -(-1.08 * SLOT_COUNT // n)


def test_build_table_routes_by_the_ring() -> None:
    addrs = {
        nid: NodeAddr(node_id=nid, host="127.0.0.1", port=9814 + i, cluster_port=19814 + i)
        for i, nid in enumerate(["a" * 40, "b" * 40, "c" * 40])
    }
    table = build_table(addrs, "a" * 40, epoch=5)
    mine = sum(table.mine)
    assert 0.9 * SLOT_COUNT / 3 <= mine <= 1.08 * SLOT_COUNT / 3 + 1
    other = next(s for s in range(SLOT_COUNT) if not table.mine[s])
    owner = addrs[table.owners[other][0]]
    assert table.redirect(other) == b"-MOVED %d 127.0.0.1:%d\r\n" % (other, owner.port)
