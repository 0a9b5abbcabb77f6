"""CLUSTER views and routing, all derived from one slot table."""

from __future__ import annotations

import attrs
import hiredis
import pytest

from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.server import Routing, Session
from keycafe.store.keyslot import SLOT_COUNT, key_slot
from tests.server.conftest import ME, Run, make_session, run_in

OTHER = NodeAddr(node_id="b" * 40, host="127.0.0.2", port=9815, cluster_port=19815)


def two_node_session() -> Session:
    """ME owns slots 0-8191 (replicated on OTHER), OTHER owns the rest."""
    owners = tuple(
        (ME.node_id, OTHER.node_id) if slot < 8192 else (OTHER.node_id, ME.node_id)
        for slot in range(SLOT_COUNT)
    )
    s = make_session()
    s.state.routing = Routing.create(
        SlotTable(
            epoch=7, my_id=ME.node_id, nodes={ME.node_id: ME, OTHER.node_id: OTHER}, owners=owners
        )
    )
    return s


def info_of(s: Session) -> dict[str, str]:
    reader = hiredis.Reader()
    reader.feed(s.execute([b"CLUSTER", b"INFO"]))
    text = reader.gets()
    assert isinstance(text, bytes)
    return dict(line.split(":", 1) for line in text.decode().split("\r\n") if line)


def test_cluster_info_counts_the_slots_of_a_dead_primary_as_failed() -> None:
    owners = tuple(
        (ME.node_id, OTHER.node_id) if slot < 12288 else (OTHER.node_id, ME.node_id)
        for slot in range(SLOT_COUNT)
    )
    nodes = {ME.node_id: ME, OTHER.node_id: OTHER}
    table = SlotTable(epoch=7, my_id=ME.node_id, nodes=nodes, owners=owners)
    s = make_session()
    s.state.routing = Routing.create(table)
    assert info_of(s)["cluster_state"] == "ok"
    s.state.routing = Routing.create(table.with_down(frozenset({OTHER.node_id})))
    info = info_of(s)
    assert info["cluster_state"] == "fail"
    assert (info["cluster_slots_fail"], info["cluster_slots_ok"]) == ("4096", "12288")
    assert info["cluster_slots_assigned"] == "16384"


def test_cluster_of_one(run: Run) -> None:
    assert run("CLUSTER", "MYID") == ME.node_id.encode()
    assert run("CLUSTER", "SLOTS") == [[0, 16383, [b"127.0.0.1", 9814, ME.node_id.encode(), []]]]
    info = run("CLUSTER", "INFO")
    assert isinstance(info, bytes)
    assert b"cluster_state:ok" in info
    assert b"cluster_slots_assigned:16384" in info
    nodes = run("CLUSTER", "NODES")
    assert (
        nodes
        == (f"{ME.node_id} 127.0.0.1:9814@19814 myself,master - 0 0 1 connected 0-16383\n").encode()
    )


def test_keyslot_and_key_counts(run: Run) -> None:
    assert run("CLUSTER", "KEYSLOT", "123456789") == 12739
    assert run("CLUSTER", "KEYSLOT", "Hello, World!") == 4054
    run("SET", "{t}1", "a")
    run("SET", "{t}2", "b")
    slot = key_slot(b"t")
    assert run("CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 2
    assert sorted(run("CLUSTER", "GETKEYSINSLOT", str(slot), "10")) == [b"{t}1", b"{t}2"]
    assert run("CLUSTER", "GETKEYSINSLOT", str(slot), "1") in ([b"{t}1"], [b"{t}2"])
    for bad in ("-1", "16384", "x"):
        reply = run("CLUSTER", "COUNTKEYSINSLOT", bad)
        assert isinstance(reply, hiredis.ReplyError)
        assert str(reply) == "ERR Invalid slot"


def test_moved_for_slots_owned_elsewhere() -> None:
    s = two_node_session()
    key_here = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) < 8192)
    key_there = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) >= 8192)
    assert run_in(s, "SET", key_here, "v") == b"OK"
    reply = run_in(s, "GET", key_there)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply) == f"MOVED {key_slot(key_there)} 127.0.0.2:9815"


def test_unowned_slot_is_clusterdown() -> None:
    s = make_session()
    owners = tuple(() if slot == key_slot(b"k") else (ME.node_id,) for slot in range(SLOT_COUNT))
    s.state.routing = Routing.create(
        SlotTable(epoch=2, my_id=ME.node_id, nodes={ME.node_id: ME}, owners=owners)
    )
    reply = run_in(s, "GET", "k")
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply) == "CLUSTERDOWN Hash slot not served"


def test_a_slot_of_a_dead_owner_is_clusterdown_and_a_moving_one_tryagain() -> None:
    s = two_node_session()
    key_there = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) >= 8192)
    table = s.state.routing.table
    s.state.routing = Routing.create(attrs.evolve(table, down=frozenset({OTHER.node_id})))
    reply = run_in(s, "GET", key_there)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply) == "CLUSTERDOWN Hash slot not served"
    # A slot received in a move whose change this node has not heard of yet.
    s.state.routing = Routing.create(table, moving=[key_slot(key_there)])
    reply = run_in(s, "GET", key_there)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply).startswith("TRYAGAIN ")


def test_slots_shards_nodes_agree() -> None:
    s = two_node_session()
    slots = run_in(s, "CLUSTER", "SLOTS")
    assert slots == [
        [0, 8191, [b"127.0.0.1", 9814, b"a" * 40, []], [b"127.0.0.2", 9815, b"b" * 40, []]],
        [8192, 16383, [b"127.0.0.2", 9815, b"b" * 40, []], [b"127.0.0.1", 9814, b"a" * 40, []]],
    ]
    shards = run_in(s, "CLUSTER", "SHARDS")
    assert isinstance(shards, list)
    assert len(shards) == 2
    first = dict(zip(shards[0][::2], shards[0][1::2], strict=True))
    assert first[b"slots"] == [0, 8191]
    node = dict(zip(first[b"nodes"][0][::2], first[b"nodes"][0][1::2], strict=True))
    assert node[b"id"] == b"a" * 40
    assert node[b"role"] == b"master"
    lines = run_in(s, "CLUSTER", "NODES")
    assert isinstance(lines, bytes)
    rows = [line.split() for line in lines.decode().splitlines()]
    assert rows[0][:3] == ["a" * 40, "127.0.0.1:9814@19814", "myself,master"]
    assert rows[0][-1] == "0-8191"
    assert rows[1][-1] == "8192-16383"
    assert rows[0][6] == "7"  # the table's epoch


@pytest.mark.parametrize("proto", [2, 3])
def test_cluster_views_in_both_protocols(proto: int) -> None:
    s = make_session()
    s.proto = proto
    shards = run_in(s, "CLUSTER", "SHARDS")
    assert isinstance(shards, list)
    shard = shards[0]
    if proto == 3:
        assert isinstance(shard, dict)
        assert shard[b"slots"] == [0, 16383]
    else:
        assert isinstance(shard, list)
        assert shard[0] == b"slots"


def test_dbsize_and_scan_cover_the_slots_this_node_is_primary_of() -> None:
    """A node holds replicas' copies too; summed over the primaries (as
    redis-py's dbsize() and scan_iter() do), each key must count once."""
    s = two_node_session()
    store = s.state.store
    mine = next(k for k in (b"k%d" % i for i in range(100)) if key_slot(k) < 8192)
    copy = next(k for k in (b"k%d" % i for i in range(100)) if key_slot(k) >= 8192)
    for k in (mine, copy):  # the second as a replica's copy of OTHER's slot
        store.put(key_slot(k), k, b"v", 0, s.state.now_ms)
    assert store.count() == 2
    assert s.execute([b"DBSIZE"]) == b":1\r\n"
    reader = hiredis.Reader()
    reader.feed(s.execute([b"SCAN", b"0", b"COUNT", b"100000"]))
    assert reader.gets() == [b"0", [mine]]
