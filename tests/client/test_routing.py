"""The client's sans-I/O parts: request encoding, reply parsing, retry rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keycafe.client.routing import (
    ANY_NODE,
    Attempt,
    Done,
    Retry,
    RetryPolicy,
    SlotMap,
    parse_seeds,
    retryable,
)
from keycafe.errors import (
    ClusterDownError,
    ConfigError,
    ConnectionError,
    ProtocolError,
    RedirectError,
    ResponseError,
    TryAgainError,
)
from keycafe.resp.client import NEED_DATA, ReplyParser, encode_command
from keycafe.resp.parser import RequestParser

A, B = ("10.0.0.1", 7000), ("10.0.0.2", 7001)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_an_encoded_command_parses_back_to_its_arguments(args: list[bytes]) -> None:
    [request] = RequestParser().receive_data(encode_command(args))
    assert request == args


def test_arguments_of_every_type_encode_as_bulk_strings() -> None:
    assert encode_command(("SET", b"k", 12, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        encode_command(("SET", "k", True))


def test_replies_come_out_in_order_with_errors_as_values() -> None:
    p = ReplyParser()
    p.feed(b"+OK\r\n-MOVED 7 10.0.0.2:7001\r\n-ERR nope\r\n$3\r\nab")
    assert p.next_reply() == b"OK"
    moved = p.next_reply()
    assert isinstance(moved, RedirectError)
    assert (moved.ask, moved.slot, moved.address) == (False, 7, B)
    err = p.next_reply()
    assert type(err) is ResponseError
    assert str(err) == "ERR nope"
    assert p.next_reply() is NEED_DATA
    p.feed(b"c\r\n")
    assert p.next_reply() == b"abc"
    garbage = ReplyParser()
    garbage.feed(b"!!\r\n")
    with pytest.raises(ProtocolError):
        garbage.next_reply()


def test_decoded_replies_keep_bytes_that_are_not_utf8() -> None:
    p = ReplyParser(decode=True)
    p.feed(b"$2\r\n\xff\xfe\r\n")
    value = p.next_reply()
    assert value.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_seeds() -> None:
    assert parse_seeds("h:1") == [("h", 1)]
    assert parse_seeds(["a:1", "[::1]:2"]) == [("a", 1), ("::1", 2)]
    for bad in ("nohost", "h:0", "h:x", ":5", []):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def slot_map() -> SlotMap:
    reply = [[0, 8191, [b"10.0.0.1", 7000, b"id1"]], [8192, 16383, [b"", 7001, b"id2"]]]
    return SlotMap.from_cluster_slots(reply, asked=("10.0.0.2", 9999))


def attempt(slot: int = 5, deadline: float = 1.0) -> Attempt:
    return Attempt(slot, RetryPolicy(deadline=deadline), 0.0, random.Random(1))


def test_the_slot_map_comes_from_cluster_slots() -> None:
    m = slot_map()
    assert m.node_for(0) == A
    assert m.node_for(16383) == ("10.0.0.2", 7001)  # an empty host is the asked node's
    assert m.primaries() == [A, B]


def test_moved_mends_the_map_and_retries_at_once() -> None:
    m, a = slot_map(), attempt()
    outcome = a.on_reply(RedirectError("MOVED 5 10.0.0.2:7001"), m, 0.1)
    assert outcome == Retry(0.0, refresh=False)
    assert m.node_for(5) == B
    assert a.target(m, lambda: A) == (B, False)
    assert a.on_reply(b"v", m, 0.2) == Done(b"v")


def test_ask_goes_once_to_the_named_node_with_asking() -> None:
    m, a = slot_map(), attempt()
    assert a.on_reply(RedirectError("ASK 5 10.0.0.2:7001"), m, 0.1) == Retry(0.0, refresh=False)
    assert a.target(m, lambda: A) == (B, True)
    assert m.node_for(5) == A  # an ASK does not change the map
    a.on_reply(b"v", m, 0.2)
    assert a.target(m, lambda: A) == (A, False)


@pytest.mark.parametrize(
    ("reply", "error", "refresh"),
    [("TRYAGAIN later", TryAgainError, False), ("CLUSTERDOWN down", ClusterDownError, True)],
)
def test_waits_back_off_until_the_deadline_then_raise_typed_errors(
    reply: str, error: type[Exception], refresh: bool
) -> None:
    m, a = slot_map(), attempt(deadline=1.0)
    outcomes: list[Retry] = []

    def until_it_gives_up() -> None:
        now = 0.0
        while True:
            outcome = a.on_reply(ResponseError(reply), m, now)
            assert isinstance(outcome, Retry)
            outcomes.append(outcome)
            now += outcome.delay + 0.001

    with pytest.raises(error, match=reply):
        until_it_gives_up()
    assert all(o.refresh is refresh for o in outcomes)
    assert all(0 <= o.delay <= 0.5 for o in outcomes)
    assert len(outcomes) > 3
    assert sum(o.delay for o in outcomes) + 0.001 * len(outcomes) >= 1.0


def test_lost_connections_retry_then_raise_connection_error() -> None:
    a = attempt(deadline=0.5)
    retries: list[Retry] = []

    def until_it_gives_up() -> None:
        while True:
            # Each try takes 10 ms to fail after the wait before it.
            now = sum(r.delay + 0.01 for r in retries)
            retries.append(a.on_connection_error(OSError("refused"), now))

    with pytest.raises(ConnectionError, match="refused"):
        until_it_gives_up()
    now = sum(r.delay + 0.01 for r in retries)  # when the last try failed
    # It gave up at the deadline, not at the first loss: the waits (each under
    # a ceiling of 0.04, 0.08, 0.16, 0.32 s) plus the tries need 4 retries at
    # least to fill 0.5 s, and every retry fetches the slot map first.
    assert now >= 0.5
    assert len(retries) >= 4
    assert all(r.refresh for r in retries)


def test_an_ordinary_error_reply_is_returned_for_the_caller_to_raise() -> None:
    err = ResponseError("ERR value is not an integer or out of range")
    assert attempt().on_reply(err, slot_map(), 0.0) == Done(err)


def test_which_error_replies_a_batch_sends_again_one_by_one() -> None:
    again = [RedirectError("MOVED 1 h:2"), RedirectError("ASK 1 h:2")]
    again += [ResponseError("TRYAGAIN moving"), ResponseError("CLUSTERDOWN down")]
    assert all(retryable(r) for r in again)
    assert not retryable(ResponseError("ERR wrong number of arguments"))


def test_a_keyless_request_goes_to_the_fallback_node() -> None:
    a = Attempt(ANY_NODE, RetryPolicy(), 0.0, random.Random(1))
    elsewhere = ("10.0.0.9", 7009)  # not the owner of any slot, the last one included
    assert a.target(slot_map(), lambda: elsewhere) == (elsewhere, False)
