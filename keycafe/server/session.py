"""One client connection's state, and the dispatch of its requests."""

from __future__ import annotations

import logging
from binascii import crc_hqx
from typing import Final

import attrs

from keycafe.cluster.slot_table import CROSSSLOT
from keycafe.resp import reply as resp
from keycafe.server.errors import CommandError
from keycafe.server.registry import COMMANDS, CommandSpec
from keycafe.server.routing import CLUSTER_IS_DOWN
from keycafe.server.state import ServerState
from keycafe.store.engine import Store
from keycafe.store.entry import HEADER_SIZE, NO_EXPIRY
from keycafe.store.keyslot import SLOT_COUNT, key_slot

log = logging.getLogger("keycafe.server")

NOAUTH: Final = b"-NOAUTH Authentication required.\r\n"
_NOTHING: Final = bytes(SLOT_COUNT)  # no slot served


@attrs.define(eq=False)
class Session:
    """A client's connection state; ``execute`` runs one request."""

    state: ServerState
    store: Store  # state.store, one attribute hop closer for the hot commands
    client_id: int
    addr: str = ""
    laddr: str = ""
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    proto: int = 2
    authenticated: bool = True
    readonly: bool = False
    # The slot of this connection's last write, for WAIT; -1 before any.
    wrote: int = -1
    # The number of the newest write not known durable in a slot this
    # connection read (Store.unsettled), since the shell last took it: the
    # reply waits for that write as a write's reply does (reset by the shell).
    read_after: int = 0
    # Set by QUIT: the shell sends what is queued, then closes.
    closing: bool = False
    created_ms: int = 0

    @classmethod
    def open(cls, state: ServerState, addr: str = "", laddr: str = "") -> Session:
        session = cls(
            state=state,
            store=state.store,
            client_id=state.new_client_id(),
            addr=addr,
            laddr=laddr,
            authenticated=not state.config.requirepass,
            created_ms=state.now_ms,
        )
        state.clients[session.client_id] = session
        return session

    def close(self) -> None:
        self.state.clients.pop(self.client_id, None)

    def execute(self, req: list[bytes]) -> bytes:
        """Run one request; return its encoded reply (errors are replies too)."""
        return self.execute_many([req])[0] if not self.closing else b""

    def execute_many(self, reqs: list[list[bytes]]) -> list[bytes]:
        """Run pipelined requests in order; return one reply per request run.

        This loop runs once per command: every lookup in it is paid millions of
        times a second under load, hence the hoisted names, the inlined routing
        and the plain GET and SET served without a handler call (measured: 10%
        of a pipelined GET or SET). Requests after QUIT are not run, as Redis.
        """
        out: list[bytes] = []
        reply = out.append
        lookup = COMMANDS.get
        state = self.state
        counters = state.counters
        # Routing changes only between batches (the shell swaps it whole), so
        # one read serves the whole batch.
        routing = state.routing
        # The lease lapsed since the core last looked (this process may have
        # been stopped): no key is served, as when the routing is halted.
        lapsed = state.clock > state.lease_until
        mine = _NOTHING if lapsed else routing.mine
        slots = self.store.slots
        put = self.store.put
        unsettled = self.store.unsettled
        get_spec, set_spec = lookup(b"get"), lookup(b"set")  # from strings.py
        for req in reqs:
            if self.closing:
                break
            spec = lookup(req[0]) or lookup(req[0].lower())
            if spec is None:
                reply(self._error(_unknown_command(req)))
                continue
            n = len(req)
            arity = spec.arity
            if n != arity and (arity > 0 or n < -arity):
                reply(self._error(f"ERR wrong number of arguments for '{spec.name}' command"))
                continue
            if not self.authenticated and not spec.no_auth:
                counters.error_replies += 1
                reply(NOAUTH)
                continue
            slot = -1
            first = spec.first_key
            if first:
                if spec.single_key:
                    key = req[first]
                    # key_slot without the call when there is no hashtag to
                    # honour. 123 is "{": an int needle is a memchr, ~8x faster.
                    slot = key_slot(key) if 123 in key else crc_hqx(key, 0) & 16383
                else:
                    slot = _common_slot(spec, req)
                    if slot < 0:
                        counters.error_replies += 1
                        reply(CROSSSLOT)
                        continue
                if not mine[slot] and not (
                    self.readonly and spec.reads and not lapsed and routing.readable(slot)
                ):
                    counters.error_replies += 1
                    reply(CLUSTER_IS_DOWN if lapsed else routing.refusal(slot))
                    continue
                if unsettled:
                    # Writes too: one that writes nothing (DEL of a key just
                    # deleted, SET NX of one just set) still tells what is there.
                    last = unsettled.get(slot, 0)
                    if last > self.read_after:
                        self.read_after = last
                if spec is get_spec:
                    # strings.get without the call, for a key with no TTL.
                    record = slots[slot].get(key)
                    if record is None:
                        reply(resp.NULL3 if self.proto == 3 else resp.NULL2)
                        continue
                    if record.startswith(NO_EXPIRY):
                        reply(record[HEADER_SIZE:])
                        continue
                elif spec is set_spec and n == 3:
                    put(slot, key, req[2], 0, state.now_ms)  # strings.set_ without options
                    self.wrote = slot
                    reply(resp.OK)
                    continue
                if spec.writes:
                    self.wrote = slot
            try:
                reply(spec.handler(self, req, slot))
            except CommandError as exc:
                reply(self._error(str(exc)))
            except Exception:
                # A bug must cost one reply, not the node or the connection.
                log.exception("command %r failed", spec.name)
                reply(self._error("ERR internal error, see the server log"))
        return out

    def _error(self, message: str) -> bytes:
        self.state.counters.error_replies += 1
        return resp.error(message)


def _common_slot(spec: CommandSpec, req: list[bytes]) -> int:
    """The slot all keys of ``req`` share, or -1 (CROSSSLOT)."""
    last = spec.last_key if spec.last_key >= 0 else len(req) + spec.last_key
    slot = key_slot(req[spec.first_key])
    for i in range(spec.first_key + spec.step, last + 1, spec.step):
        if key_slot(req[i]) != slot:
            return -1
    return slot


def _unknown_command(req: list[bytes]) -> str:
    # Redis: "ERR unknown command 'x', with args beginning with: 'a' 'b' "
    name = req[0][:128].decode(errors="replace")
    args = "".join(f"'{a[:128].decode(errors='replace')}' " for a in req[1:])
    return f"ERR unknown command '{name}', with args beginning with: {args}"
