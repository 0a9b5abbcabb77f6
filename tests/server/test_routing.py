"""Routing: one value, swapped whole, answering serve / MOVED / TRYAGAIN / CLUSTERDOWN."""

from __future__ import annotations

import attrs
import hiredis
import pytest

from keycafe.cluster.slot_table import CLUSTERDOWN, SlotTable
from keycafe.server import Routing
from keycafe.server.routing import TRYAGAIN
from keycafe.store.keyslot import SLOT_COUNT, key_slot
from tests.server.conftest import ME, make_session, run_in
from tests.server.test_cluster_commands import OTHER, two_node_session


def two_node_table() -> SlotTable:
    owners = tuple((ME.node_id,) if slot < 8192 else (OTHER.node_id,) for slot in range(SLOT_COUNT))
    nodes = {ME.node_id: ME, OTHER.node_id: OTHER}
    return SlotTable(epoch=3, my_id=ME.node_id, nodes=nodes, owners=owners)


def test_refusals() -> None:
    table = two_node_table()
    r = Routing.create(table, moving=[9000])
    assert r.mine == table.mine
    assert (r.mine[100], r.mine[9000], r.mine[9001]) == (1, 0, 0)
    assert r.refusal(9000) == TRYAGAIN
    assert r.refusal(9001) == b"-MOVED 9001 127.0.0.2:9815\r\n"
    down = r.with_table(attrs.evolve(table, down=frozenset({OTHER.node_id})))
    assert down.refusal(9001) == CLUSTERDOWN
    assert down.refusal(9000) == TRYAGAIN  # still moving under the new table


def test_changes_build_new_values_and_leave_the_old_one_alone() -> None:
    r = Routing.create(two_node_table())
    moved = r.with_moving([9000, 9001])
    assert moved.moving[9000] == moved.moving[9001] == 1
    assert r.moving == bytes(SLOT_COUNT)
    settled = moved.without_moving([9000])
    assert (settled.moving[9000], settled.moving[9001]) == (0, 1)
    assert moved.moving[9000] == 1
    assert sum(settled.moving) == 1


def test_a_session_routes_by_the_value_swapped_in() -> None:
    s = two_node_session()
    key = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) >= 8192)
    slot = key_slot(key)
    s.state.routing = s.state.routing.with_moving([slot])
    reply = run_in(s, "GET", key)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply).startswith("TRYAGAIN ")
    s.state.routing = s.state.routing.without_moving([slot])
    reply = run_in(s, "GET", key)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply).startswith("MOVED ")
    s.state.routing = Routing.create(SlotTable.single(ME))
    assert run_in(s, "GET", key) is None  # served here now


def test_asking_is_accepted_and_changes_no_routing() -> None:
    """keycafe answers TRYAGAIN, never ASK, during a move; a client's ASKING
    must not make a node serve a slot it has received but not adopted."""
    s = two_node_session()
    key = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) >= 8192)
    s.state.routing = s.state.routing.with_moving([key_slot(key)])
    assert run_in(s, "ASKING") == b"OK"
    for _ in range(2):
        reply = run_in(s, "GET", key)
        assert isinstance(reply, hiredis.ReplyError)
        assert str(reply).startswith("TRYAGAIN ")
    assert run_in(s, "ASKING") == b"OK"
    reply = run_in(s, "SET", key, "v")
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply).startswith("TRYAGAIN ")


def test_a_moving_slot_of_mine_is_not_served_and_the_rest_are() -> None:
    table = two_node_table()
    r = Routing.create(table, moving=[100, 8191, 9000])
    assert (r.mine[99], r.mine[100], r.mine[101], r.mine[8191], r.mine[9000]) == (1, 0, 1, 0, 0)
    assert sum(r.mine) == sum(table.mine) - 2
    assert r.refusal(100) == TRYAGAIN


def test_a_table_with_members_down_redirects_to_none_of_them() -> None:
    table = two_node_table()
    assert table.redirect(9001) == b"-MOVED 9001 127.0.0.2:9815\r\n"  # cached in table
    down = table.with_down(frozenset({OTHER.node_id}))
    assert down.redirect(9001) == CLUSTERDOWN
    assert table.redirect(9001) == b"-MOVED 9001 127.0.0.2:9815\r\n"  # the old one unchanged
    assert down.mine == table.mine
    assert down.down == frozenset({OTHER.node_id})
    assert table.slots_assigned() == SLOT_COUNT


def test_moving_holds_only_zeros_and_ones() -> None:
    moving = bytearray(SLOT_COUNT)
    moving[5] = 2
    with pytest.raises(ValueError, match="0 or 1"):
        Routing(table=two_node_table(), moving=bytes(moving))


def test_a_lapsed_lease_serves_no_key_before_the_routing_says_so() -> None:
    """A process that was stopped finds requests waiting when it wakes: they
    are refused by the lease's deadline, not by a timer yet to run."""
    s = make_session()
    run_in(s, "SET", "k", "v")
    s.state.lease_until = 100.0
    s.state.clock = 99.0
    assert run_in(s, "GET", "k") == b"v"
    assert not s.state.routing.halted
    s.state.clock = 100.5
    for cmd in (("GET", "k"), ("SET", "k", "w"), ("DEL", "k")):
        reply = run_in(s, *cmd)
        assert isinstance(reply, hiredis.ReplyError)
        assert str(reply).startswith("CLUSTERDOWN")
    run_in(s, "READONLY")
    assert isinstance(run_in(s, "GET", "k"), hiredis.ReplyError)  # nor to a READONLY client
    assert run_in(s, "PING") == b"PONG"  # keyless commands are answered
    s.state.clock = 99.9  # a fresh lease: served again, and nothing was written meanwhile
    assert run_in(s, "GET", "k") == b"v"
