"""A flood of datagrams does not hold a node's loop: they are read a batch per step."""

from __future__ import annotations

import itertools
import socket

import trio
import trio.lowlevel

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.messages import MemberInfo, State
from keycafe.node.gossip import DATAGRAM_BATCH, GossipService, open_cluster_port

ME = "f" * 40
SENT = 120  # > 2 * DATAGRAM_BATCH; tiny datagrams: all fit the kernel's default receive buffer


async def test_a_socket_that_never_runs_dry_lets_the_other_tasks_run() -> None:
    """At N=100 one node read datagrams for 28 s in one task step (the socket
    never ran dry), its timers starved and every member suspected it."""
    udp, listener = await open_cluster_port("127.0.0.1", 0)
    port = udp.getsockname()[1]
    me = MemberInfo(
        node=ME,
        addr=("127.0.0.1", port),
        client_addr=("127.0.0.1", 1),
        incarnation=1,
        state=State.ALIVE,
    )
    gossip = GossipService(me=me, config=GossipConfig.local(), seeds=[])
    handled = 0
    inner = gossip._datagram

    def counting(data: bytes, addr: tuple[str, int]) -> None:
        nonlocal handled
        handled += 1
        inner(data, addr)

    gossip._datagram = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(gossip.run, udp, listener)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(SENT):  # queued in the kernel before the node reads any
            sender.sendto(b"junk %d" % i, ("127.0.0.1", port))
        sender.close()
        seen, runs = [handled], 0
        with trio.fail_after(10):
            while handled < SENT:
                await trio.lowlevel.checkpoint()  # one turn of this task per scheduler batch
                seen.append(handled)
                runs += 1
        nursery.cancel_scope.cancel()
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert handled == SENT
    # trio shuffles the tasks of each scheduler batch, so the reader may run
    # once before and once after our turn: two batches at most between turns.
    assert max(steps) <= 2 * DATAGRAM_BATCH
    assert runs >= SENT // (2 * DATAGRAM_BATCH)  # ... so the reading took many turns
    assert gossip.core.stats.bad_packets >= SENT
