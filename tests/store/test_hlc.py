from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keycafe.store.hlc import LOGICAL_BITS, MAX_AHEAD_MS, MAX_STAMP, HybridClock, stamp_ms


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
    assert clock.refused == 0


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 10**13),
            st.integers(-(10**13), MAX_AHEAD_MS),  # how far ahead a remote stamp is
            st.integers(0, (1 << LOGICAL_BITS) - 1),
        )
    )
)
def test_stamps_strictly_increase(events: list[tuple[bool, int, int, int]]) -> None:
    clock = HybridClock()
    last = -1
    for is_remote, wall, ahead, counter in events:
        remote = max(0, ((wall + ahead) << LOGICAL_BITS) + counter)
        stamp = clock.observe(remote, wall) if is_remote else clock.now(wall)
        assert stamp > last
        if is_remote:
            assert stamp > remote
        assert stamp >= wall << LOGICAL_BITS
        last = stamp
    assert clock.refused == 0


def test_a_stamp_further_ahead_than_the_skew_bound_is_refused() -> None:
    wall = 1_700_000_000_000
    clock = HybridClock()
    at_bound = ((wall + MAX_AHEAD_MS) << LOGICAL_BITS) + 0xFFFF
    assert clock.observe(at_bound, wall) == at_bound + 1
    clock = HybridClock()
    beyond = at_bound + 1
    assert clock.observe(beyond, wall) == wall << LOGICAL_BITS  # a local tick
    assert clock.refused == 1
    assert clock.now(wall) == (wall << LOGICAL_BITS) + 1


def test_stamps_saturate_at_the_top_of_their_field() -> None:
    clock = HybridClock(last=MAX_STAMP - 1)
    assert clock.now(1000) == MAX_STAMP
    assert clock.now(1000) == MAX_STAMP
    assert HybridClock().now(1 << 48) == MAX_STAMP  # wall time past the year 10889
    far = HybridClock(max_ahead_ms=1 << 60)
    assert far.observe(MAX_STAMP, 1000) == MAX_STAMP


@given(
    remote=st.integers(0, MAX_STAMP),
    last=st.integers(0, MAX_STAMP),
    wall=st.integers(0, 1 << 50),
)
def test_any_stamp_observed_leaves_stamps_in_range(remote: int, last: int, wall: int) -> None:
    clock = HybridClock(last=last)
    stamp = clock.observe(remote, wall)
    assert stamp <= MAX_STAMP
    assert clock.now(wall) <= MAX_STAMP
    if clock.refused:
        assert stamp_ms(remote) > wall + MAX_AHEAD_MS
    elif last < MAX_STAMP:
        assert stamp > max(remote, last) or stamp == MAX_STAMP
