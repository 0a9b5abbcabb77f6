from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keycafe.store.hlc import LOGICAL_BITS, HybridClock, stamp_ms


def test_follows_wall_time_and_breaks_ties_with_the_counter() -> None:
    clock = HybridClock()
    a = clock.now(1000)
    b = clock.now(1000)
    c = clock.now(1001)
    assert stamp_ms(a) == 1000
    assert b == a + 1
    assert c == 1001 << LOGICAL_BITS


def test_observing_a_stamp_from_the_future_moves_past_it() -> None:
    clock = HybridClock()
    remote = (5000 << LOGICAL_BITS) + 7
    assert clock.observe(remote, 1000) == remote + 1
    assert clock.now(1000) > remote  # local wall time is behind: still increases


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10**13), st.integers(0, 2**60))))
def test_stamps_strictly_increase(events: list[tuple[bool, int, int]]) -> None:
    clock = HybridClock()
    last = -1
    for is_remote, wall, remote in events:
        stamp = clock.observe(remote, wall) if is_remote else clock.now(wall)
        assert stamp > last
        if is_remote:
            assert stamp > remote
        assert stamp >= wall << LOGICAL_BITS
        last = stamp
