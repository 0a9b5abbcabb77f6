"""Lifeguard's timing math, the dissemination queue and the local health multiplier."""

from __future__ import annotations

import math

import pytest

from keycafe.gossip.awareness import Awareness
from keycafe.gossip.broadcast import BroadcastQueue, retransmit_limit
from keycafe.gossip.core import push_pull_scale
from keycafe.gossip.suspicion import Suspicion, remaining, suspicion_timeout


def test_suspicion_timeout_is_alpha_log10_n_t() -> None:
    assert suspicion_timeout(4, 100, 1.0) == pytest.approx(8.0)
    assert suspicion_timeout(4, 1000, 1.0) == pytest.approx(12.0)
    assert suspicion_timeout(4, 5, 1.0) == pytest.approx(4.0)  # log10 floored at 1


def test_confirmations_shrink_the_timeout_from_beta_to_one_times_the_minimum() -> None:
    lo, hi = 8.0, 48.0
    assert remaining(0, 2, 0.0, lo, hi) == pytest.approx(48.0)
    assert remaining(1, 2, 0.0, lo, hi) == pytest.approx(48 - 40 * math.log(2) / math.log(3))
    assert remaining(2, 2, 0.0, lo, hi) == pytest.approx(8.0)
    assert remaining(5, 2, 0.0, lo, hi) == pytest.approx(8.0)  # never below the minimum
    assert remaining(0, 0, 3.0, lo, hi) == pytest.approx(5.0)  # k=0 starts at the minimum


def test_a_suspicion_counts_each_confirmer_once() -> None:
    s = Suspicion(started=10.0, k=2, lo=8.0, hi=48.0, confirmers={"a"})
    assert s.deadline == pytest.approx(58.0)
    assert s.confirm("b", 11.0)
    assert not s.confirm("b", 12.0)
    assert s.confirm("c", 12.0)
    assert s.deadline == pytest.approx(18.0)
    assert not s.confirm("d", 13.0)  # k reached


def test_awareness_scales_and_saturates() -> None:
    a = Awareness(max_multiplier=8)
    assert a.scale(0.5) == 0.5
    a.apply_delta(3)
    assert a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7
    a.apply_delta(-100)
    assert a.score == 0


def test_retransmit_limit() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 1000) == 16


def test_broadcasts_newest_replaces_fewest_sent_first_and_limit() -> None:
    q = BroadcastQueue(retransmit_mult=1)  # limit ceil(log10(n+1)) = 1 for n <= 9
    q.queue("a", b"a1")
    q.queue("b", b"b1")
    q.queue("a", b"a2")  # replaces a1
    assert len(q) == 2
    assert sorted(q.take(100, members=5)) == [b"a2", b"b1"]
    assert len(q) == 0  # each reached its limit
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("x", b"x" * 10)
    q.queue("y", b"y" * 10)
    assert q.take(15, members=5) == [b"y" * 10]  # newest first, one fits
    assert q.take(15, members=5) == [b"x" * 10]  # then the one sent fewer times


def test_push_pull_interval_scales_with_log2_n() -> None:
    assert push_pull_scale(30.0, 32) == 30.0
    assert push_pull_scale(30.0, 64) == 60.0
    assert push_pull_scale(30.0, 1000) == 30.0 * (math.ceil(math.log2(1000) - 5) + 1)
