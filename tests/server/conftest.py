from __future__ import annotations

from collections.abc import Callable

import hiredis
import pytest

from keycafe.cluster.slot_table import NodeAddr
from keycafe.server import ServerConfig, ServerState, Session

ME = NodeAddr(node_id="a" * 40, host="127.0.0.1", port=9814, cluster_port=19814)

Run = Callable[..., object]


def make_session(requirepass: str = "", now: int = 1_700_000_000_000) -> Session:
    state = ServerState.create(ServerConfig(me=ME, requirepass=requirepass), now)
    return Session.open(state)


def run_in(session: Session, *args: bytes | str | int) -> object:
    """Execute one command and decode its reply with hiredis."""
    req = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    raw = session.execute(req)
    reader = hiredis.Reader()
    reader.feed(raw)
    value = reader.gets()
    assert value is not False, f"incomplete reply {raw!r}"
    assert reader.gets() is False, f"more than one reply in {raw!r}"
    return value


@pytest.fixture
def session() -> Session:
    return make_session()


@pytest.fixture
def run(session: Session) -> Run:
    return lambda *args: run_in(session, *args)
