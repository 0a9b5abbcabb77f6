"""READONLY/READWRITE, WAIT and INFO replication on a node that is the primary
of half the slots and the replica of the other half."""

from __future__ import annotations

import attrs
import hiredis
import pytest

from keycafe.cluster.slot_table import SlotTable
from keycafe.server import Routing, ServerConfig, ServerState, Session
from keycafe.store.engine import REPLICATED
from keycafe.store.keyslot import SLOT_COUNT, key_slot
from tests.server.conftest import ME, run_in
from tests.server.test_cluster_commands import OTHER

NOW = 1_700_000_000_000


def _paired_session() -> Session:
    """ME leads slots 0..8191 with OTHER as replica (slots below 100 alone,
    with no replica); OTHER leads the rest with ME as replica."""
    pair, flip, alone = (ME.node_id, OTHER.node_id), (OTHER.node_id, ME.node_id), (ME.node_id,)
    owners = tuple(alone if s < 100 else pair if s < 8192 else flip for s in range(SLOT_COUNT))
    nodes = {ME.node_id: ME, OTHER.node_id: OTHER}
    table = SlotTable(epoch=3, my_id=ME.node_id, nodes=nodes, owners=owners)
    state = ServerState.create(ServerConfig(me=ME), NOW)
    state.routing = Routing.create(table)
    return Session.open(state)


def _key(low: bool) -> bytes:
    return next(k for i in range(1000) if (100 <= key_slot(k := b"k%d" % i) < 8192) == low)


def _unreplicated_key() -> bytes:
    return next(k for i in range(10_000) if key_slot(k := b"k%d" % i) < 100)


def _error(reply: object) -> str:
    assert isinstance(reply, hiredis.ReplyError), reply
    return str(reply)


def test_readonly_lets_a_replica_serve_reads_of_its_slots_and_nothing_else() -> None:
    s = _paired_session()
    theirs = _key(low=False)
    s.store.put(key_slot(theirs), theirs, b"copy", 0, NOW)  # as replication would
    assert _error(run_in(s, "GET", theirs)).startswith("MOVED ")
    assert run_in(s, "READONLY") == b"OK"
    assert run_in(s, "GET", theirs) == b"copy"
    assert run_in(s, "EXISTS", theirs) == 1
    assert _error(run_in(s, "SET", theirs, "x")).startswith("MOVED ")  # writes still go
    assert run_in(s, "GET", theirs) == b"copy"
    assert run_in(s, "READWRITE") == b"OK"
    assert _error(run_in(s, "GET", theirs)).startswith("MOVED ")
    # A slot between owners here is not read, even by a READONLY client.
    assert run_in(s, "READONLY") == b"OK"
    s.state.routing = s.state.routing.with_moving([key_slot(theirs)])
    assert _error(run_in(s, "GET", theirs)).startswith("TRYAGAIN ")


def test_readonly_does_not_serve_slots_this_node_holds_no_copy_of() -> None:
    s = _paired_session()
    third = attrs.evolve(OTHER, node_id="c" * 40, port=9816)
    table = s.state.routing.table
    owners = tuple(
        (OTHER.node_id, third.node_id) if o[0] == OTHER.node_id else o for o in table.owners
    )
    nodes = {**table.nodes, third.node_id: third}
    s.state.routing = Routing.create(attrs.evolve(table, owners=owners, nodes=nodes))
    assert run_in(s, "READONLY") == b"OK"
    assert _error(run_in(s, "GET", _key(low=False))).startswith("MOVED ")


def test_wait_counts_the_live_replicas_of_the_last_write() -> None:
    s = _paired_session()
    assert run_in(s, "WAIT", 1, 0) == 0  # no write yet: the fewest of any slot led here
    assert run_in(s, "SET", _key(low=True), "v") == b"OK"
    assert run_in(s, "WAIT", 1, 100) == 1
    table = s.state.routing.table
    s.state.routing = Routing.create(table.with_down(frozenset({OTHER.node_id})))
    assert run_in(s, "WAIT", 1, 100) == 0  # the replica died: none holds it now
    s.state.routing = Routing.create(table)
    assert run_in(s, "INCR", _unreplicated_key()) == 1
    assert run_in(s, "WAIT", 1, 0) == 0  # the last write is of a slot with no replica
    assert _error(run_in(s, "SET", _key(low=False), "x")).startswith("MOVED ")
    assert run_in(s, "WAIT", 1, 0) == 0  # a refused write is not the last write
    assert run_in(s, "DEL", _key(low=True)) == 1
    assert run_in(s, "WAIT", 1, 0) == 1


def test_wait_checks_its_arguments() -> None:
    s = _paired_session()
    assert _error(run_in(s, "WAIT", 1, -1)) == "ERR timeout is negative"
    assert _error(run_in(s, "WAIT", "x", 0)).startswith("ERR value is not an integer")
    assert _error(run_in(s, "WAIT", 1)).startswith("ERR wrong number of arguments")


def test_a_lone_node_has_no_replica_to_wait_for() -> None:
    state = ServerState.create(ServerConfig(me=ME), NOW)
    s = Session.open(state)
    assert run_in(s, "SET", "k", "v") == b"OK"
    assert run_in(s, "WAIT", 1, 10) == 0


def test_info_replication_names_the_replicas_and_both_roles() -> None:
    s = _paired_session()
    text = run_in(s, "INFO", "replication")
    assert isinstance(text, bytes)
    lines = text.decode().splitlines()
    fields = dict(x.split(":", 1) for x in lines if ":" in x and not x.startswith("#"))
    assert fields["role"] == "master"
    assert fields["connected_slaves"] == "1"
    assert f"id={OTHER.node_id}" in fields["slave0"]
    assert "port=9815" in fields["slave0"]
    assert fields["keycafe_primary_slots"] == "8192"
    assert fields["keycafe_replica_slots"] == "8192"


@pytest.mark.parametrize("command", ["GET", "SET"])
def test_spec_flags_say_read_and_write(command: str) -> None:
    from keycafe.server.registry import COMMANDS

    spec = COMMANDS[command.encode()]
    assert (spec.reads, spec.writes) == (command == "GET", command == "SET")


def test_flushall_empties_the_slots_led_here_and_leaves_replica_copies() -> None:
    s = _paired_session()
    store = s.store
    led = [
        i for i, o in enumerate(s.state.routing.table.owners) if len(o) > 1 and o[0] == ME.node_id
    ]
    store.set_watch(REPLICATED, led)  # as replication sets it for led slots with replicas
    mine, alone, theirs = _key(low=True), _unreplicated_key(), _key(low=False)
    for key in (mine, alone, theirs):
        store.put(key_slot(key), key, b"v", 0, NOW)
    store.replog.clear()
    assert run_in(s, "FLUSHALL") == b"OK"
    assert store.lookup(key_slot(mine), mine, NOW) is None
    assert store.lookup(key_slot(alone), alone, NOW) is None
    assert store.lookup(key_slot(theirs), theirs, NOW) is not None  # another primary's
    # The replicated slot's delete travels as a tombstone; the other leaves no trace.
    assert (key_slot(mine), mine) in store.replog
    assert mine in store.tombstones[key_slot(mine)]
    assert alone not in store.tombstones[key_slot(alone)]


@pytest.mark.parametrize(
    ("allowed", "addr", "ok"),
    [
        ("no", "127.0.0.1:5000", False),
        ("yes", "10.1.2.3:5000", True),
        ("local", "10.1.2.3:5000", False),
        ("local", "127.0.0.1:5000", True),
        ("local", "::1:5000", True),
    ],
)
def test_debug_forget_is_refused_unless_enabled(allowed: str, addr: str, ok: bool) -> None:
    state = ServerState.create(ServerConfig(me=ME, enable_debug_command=allowed), NOW)
    s = Session.open(state, addr=addr)
    assert run_in(s, "SET", "k", "v") == b"OK"
    reply = run_in(s, "DEBUG", "FORGET", "k")
    if ok:
        assert reply == 1
        assert run_in(s, "GET", "k") is None
        assert run_in(s, "DEBUG", "FORGET", "k") == 0
        assert s.store.tombstones[key_slot(b"k")] == {}  # no trace: not a delete
    else:
        assert _error(reply).startswith("ERR DEBUG command not allowed.")
        assert run_in(s, "GET", "k") == b"v"
