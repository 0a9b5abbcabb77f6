"""The slot service's part in ring changes, in process (no sockets)."""

from __future__ import annotations

import trio
import trio.testing

from keycafe.cluster import coordinator
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.slot_table import NodeAddr
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.messages import MemberInfo, State
from keycafe.node.gossip import GossipService
from keycafe.node.links import PeerLinks
from keycafe.node.slots import SlotService
from keycafe.server.state import ServerConfig, ServerState

OLD = "a" * 40  # the member that holds every slot
ME = "b" * 40  # a joiner
OTHER = "c" * 40  # another joiner


def info(node: str, port: int) -> MemberInfo:
    return MemberInfo(
        node=node,
        addr=("127.0.0.1", port + 10000),
        client_addr=("127.0.0.1", port),
        incarnation=1,
        state=State.ALIVE,
    )


async def test_a_replaced_proposal_never_reports_ready_after_its_successor() -> None:
    """Two proposals reach a joiner in one go (epoch 2 for two members, then
    epoch 3 for three): it must end ready for 3. It used to announce 2 last,
    as the replaced proposal had nothing to send, so no checkpoint to cancel
    at, and the coordinator waited for ever (a launch hung ~1 in 200). trio
    runs the two proposals' tasks in a random order; 20 rounds see both."""
    for _ in range(20):
        await _two_proposals_in_one_go()


def _service(links: PeerLinks) -> tuple[GossipService, SlotService]:
    """ME's slot service, its gossip knowing OLD and OTHER as alive."""
    gossip = GossipService(me=info(ME, 20001), config=GossipConfig.local(), seeds=[])
    for member in (info(OLD, 20000), info(OTHER, 20002)):
        gossip.core._on_alive(member, trio.current_time())
    addr = NodeAddr(node_id=ME, host="127.0.0.1", port=20001, cluster_port=30001)
    state = ServerState.create(ServerConfig(me=addr), 0)
    return gossip, SlotService(state, gossip, links)


async def _two_proposals_in_one_go() -> None:
    gossip, slots = _service(PeerLinks(ME))
    async with trio.open_nursery() as nursery:
        await nursery.start(slots.run)
        now = trio.current_time()
        gossip.keeper.publish(
            Ring(epoch=2, term=1, coordinator=OLD, members=(OLD,), pending=(OLD, ME)), now
        )
        gossip.flush()
        gossip.keeper.publish(
            Ring(epoch=3, term=1, coordinator=OLD, members=(OLD,), pending=(OLD, ME, OTHER)), now
        )
        gossip.flush()
        await trio.testing.wait_all_tasks_blocked()
        assert gossip.core.me.meta.get(coordinator.READY_KEY) == "1.3"
        assert slots.ring is not None
        assert slots.ring.epoch == 3
        nursery.cancel_scope.cancel()


class _StuckLinks(PeerLinks):
    """Links whose queue to one peer is full until ``free`` is set."""

    def __init__(self, node: str, stuck: str) -> None:
        super().__init__(node)
        self.stuck = stuck
        self.free = trio.Event()
        self.sent: list[tuple[str, object]] = []

    def send_nowait(self, peer: str, addr: object, kind: int, body: object) -> None:  # type: ignore[override]
        if peer == self.stuck and not self.free.is_set():
            raise trio.WouldBlock
        self.sent.append((peer, body))

    async def send(self, peer: str, addr: object, kind: int, body: object) -> None:  # type: ignore[override]
        if peer == self.stuck:
            await self.free.wait()
        self.sent.append((peer, body))


async def test_a_peer_whose_link_is_full_holds_up_no_frame_to_the_others() -> None:
    """Frames to a peer whose queue is full wait in order for a task of its
    own; the core builds nothing more for it meanwhile; the rest flow."""
    from keycafe.cluster import frames
    from keycafe.cluster.handoff import Outgoing

    links = _StuckLinks(ME, stuck=OLD)
    _, slots = _service(links)
    queue = slots.cluster.antientropy._out
    async with trio.open_nursery() as nursery:
        await nursery.start(slots.run)
        for i in range(3):
            queue.append(Outgoing(peer=OLD, kind=frames.AE_SYNC, body=("old", i)))
            queue.append(Outgoing(peer=OTHER, kind=frames.AE_SYNC, body=("other", i)))
        slots._wake_sender.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [b for p, b in links.sent if p == OTHER] == [("other", i) for i in range(3)]
        assert not [b for p, b in links.sent if p == OLD]
        assert OLD in slots._overflow
        queue.append(Outgoing(peer=OLD, kind=frames.AE_SYNC, body=("old", 3)))
        queue.append(Outgoing(peer=OTHER, kind=frames.AE_SYNC, body=("other", 3)))
        slots._wake_sender.set()
        await trio.testing.wait_all_tasks_blocked()
        assert links.sent[-1] == (OTHER, ("other", 3))
        assert [o.body for o in queue] == [("old", 3)]  # held back in the core
        links.free.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [b for p, b in links.sent if p == OLD] == [("old", i) for i in range(4)]
        assert not slots._overflow
        nursery.cancel_scope.cancel()
