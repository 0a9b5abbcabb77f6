"""The aligned probe order: a shared sorted list plus each member's differences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keycafe.gossip.order import HashedOrder, LiveOrder, order_key

NAMES = [f"n{i:04d}" for i in range(40)]


@given(
    base=st.sets(st.sampled_from(NAMES)),
    changes=st.lists(st.tuples(st.booleans(), st.sampled_from(NAMES)), max_size=60),
)
def test_a_live_order_is_the_sorted_live_set(
    base: set[str], changes: list[tuple[bool, str]]
) -> None:
    order = LiveOrder(HashedOrder.of(base))
    live = set(base)
    for add, name in changes:
        if add:
            order.add(name)
            live.add(name)
        else:
            order.discard(name)
            live.discard(name)
        expected = sorted(live, key=order_key)
        assert len(order) == len(expected)
        assert list(order) == expected
        assert [order[i] for i in range(len(order))] == expected
        assert [order.index(x) for x in expected] == list(range(len(expected)))
        assert all((x in order) == (x in live) for x in NAMES)


def test_a_few_differences_keep_the_shared_order() -> None:
    shared = HashedOrder.of(f"m{i}" for i in range(1000))
    order = LiveOrder(shared)
    order.discard("m7")  # a death
    order.add("x1")  # a join
    assert order[order.index("m8")] == "m8"
    assert order.base is shared  # no copy of the 1000 ids for two changes
    for i in range(40):  # more than sqrt(1000): the next look-up sorts its own
        order.discard(f"m{100 + i}")
    assert order.index("m8") >= 0
    assert order.base is not shared
    assert list(order) == sorted(
        {f"m{i}" for i in range(1000)} - {"m7"} - {f"m{100 + i}" for i in range(40)} | {"x1"},
        key=order_key,
    )
