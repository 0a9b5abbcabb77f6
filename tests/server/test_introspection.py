"""INFO and CONFIG RESETSTAT, and what the shell's probe feeds them."""

from __future__ import annotations

from collections.abc import Mapping

import hiredis

from keycafe.server import MemberView
from keycafe.store.keyslot import key_slot
from tests.server.conftest import make_session, run_in
from tests.server.test_cluster_commands import OTHER, info_of, two_node_session


def stats(raw: bytes) -> dict[str, str]:
    reader = hiredis.Reader()
    reader.feed(raw)
    text = reader.gets()
    assert isinstance(text, bytes)
    return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)


def test_resetstat_resets_the_counters_the_running_batch_counts_into() -> None:
    """RESETSTAT pipelined with more requests: what follows it in the same
    batch is counted in the figures INFO shows, not in a discarded object."""
    s = two_node_session()
    counters = s.state.counters
    assert isinstance(run_in(s, "NOSUCHCOMMAND"), hiredis.ReplyError)
    assert counters.error_replies == 1
    elsewhere = next(b"k%d" % i for i in range(100) if key_slot(b"k%d" % i) >= 8192)
    replies = s.execute_many([[b"CONFIG", b"RESETSTAT"], [b"GET", elsewhere], [b"INFO", b"stats"]])
    assert replies[0] == b"+OK\r\n"
    assert replies[1].startswith(b"-MOVED ")
    assert stats(replies[2])["total_error_replies"] == "1"
    assert s.state.counters is counters  # every holder sees the reset


def test_resetstat_zeroes_every_counter() -> None:
    s = make_session()
    c = s.state.counters
    c.connections_received = c.commands_processed = c.net_input_bytes = 5
    c.rejected_connections = c.protocol_errors = c.error_replies = c.net_output_bytes = 5
    assert run_in(s, "CONFIG", "RESETSTAT") == b"OK"
    figures = stats(s.execute([b"INFO", b"stats"]))
    for name in (
        "total_connections_received",
        "total_commands_processed",
        "total_net_input_bytes",
        "total_net_output_bytes",
        "rejected_connections",
        "total_error_replies",
        "protocol_errors",
    ):
        assert figures[name] == "0", name


class FakeProbe:
    def process(self) -> Mapping[str, float]:
        return {"rss": 12345, "cpu_user": 1.5, "cpu_sys": 0.25}

    def members(self) -> list[MemberView]:
        return [
            MemberView(
                node_id=OTHER.node_id,
                host=OTHER.host,
                port=OTHER.port,
                cluster_port=OTHER.cluster_port,
                state="suspect",
            )
        ]

    def figures(self) -> Mapping[str, int | str]:
        return {"ring_epoch": 9, "gossip_members_alive": 2}


def test_info_and_cluster_views_ask_the_shells_probe() -> None:
    s = make_session()
    s.state.probe = FakeProbe()
    info = stats(s.execute([b"INFO", b"memory", b"cpu"]))
    assert info["used_memory_rss"] == "12345"
    assert info["used_cpu_user"] == "1.500000"
    cluster = stats(s.execute([b"CLUSTER", b"INFO"]))
    assert cluster["keycafe_ring_epoch"] == "9"  # the shell's, over the table's 1
    assert cluster["keycafe_gossip_members_alive"] == "2"
    assert cluster["cluster_known_nodes"] == "2"
    nodes = run_in(s, "CLUSTER", "NODES")
    assert isinstance(nodes, bytes)
    assert f"{OTHER.node_id} 127.0.0.2:9815@19815 master,fail? ".encode() in nodes


def test_a_lone_state_reports_its_tables_epoch_and_no_process_figures() -> None:
    s = make_session()
    cluster = stats(s.execute([b"CLUSTER", b"INFO"]))
    assert cluster["keycafe_ring_epoch"] == "1"
    assert cluster["cluster_known_nodes"] == "1"
    assert stats(s.execute([b"INFO", b"memory"]))["used_memory"] == "0"


class MinorityProbe(FakeProbe):
    def figures(self) -> Mapping[str, int | str]:
        return {"coordinator_majority": 0}


def test_cluster_info_tells_a_minority_node_it_is_failed() -> None:
    s = make_session()
    assert stats(s.execute([b"CLUSTER", b"INFO"]))["cluster_state"] == "ok"
    s.state.probe = MinorityProbe()
    cluster = stats(s.execute([b"CLUSTER", b"INFO"]))
    assert cluster["cluster_state"] == "fail"
    assert cluster["cluster_slots_ok"] == "16384"  # its slots are not failed: it is


def test_cluster_info_counts_the_slots_of_a_suspected_primary_as_pfail() -> None:
    s = two_node_session()
    s.state.probe = FakeProbe()  # OTHER is suspected
    info = info_of(s)
    assert info["cluster_state"] == "ok"  # suspected is not failed: still served
    assert (info["cluster_slots_pfail"], info["cluster_slots_ok"]) == ("8192", "8192")
    assert info["cluster_slots_fail"] == "0"
